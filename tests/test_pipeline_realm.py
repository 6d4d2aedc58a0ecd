"""The "realm-open-qa" transformers pipeline on the reference open-QA fixture."""

import json

import pytest
from transformers import pipeline

from realm_hf import RealmForOpenQA, save_realm
from realm_hf.inference import answer_questions
from realm_hf.pipeline_realm import RealmOpenQAPipeline

from .utils import REFERENCE, openqa_retriever


QUESTIONS = [q["question"] for q in json.loads((REFERENCE / "openqa" / "questions.json").read_text())]


@pytest.fixture
def model(openqa_tokenizer, blocks):
    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    return RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors", retriever=retriever).eval()


def test_pipeline_matches_answer_questions_batched_or_not(model, openqa_tokenizer):
    qa = pipeline("realm-open-qa", model=model, tokenizer=openqa_tokenizer)
    assert isinstance(qa, RealmOpenQAPipeline)
    expected = answer_questions(model, openqa_tokenizer, QUESTIONS)
    for batch_size in (1, 2, 4):
        results = qa(QUESTIONS, batch_size=batch_size)
        assert [r["answer"] for r in results] == [a.answer for a in expected]
        assert [r["block_id"] for r in results] == [a.block_id for a in expected]
        assert [r["evidence"] for r in results] == [a.evidence for a in expected]
        assert [r["title"] for r in results] == [a.title for a in expected]
        assert [r["score"] for r in results] == pytest.approx([a.score for a in expected], abs=1e-5)
    one = qa(QUESTIONS[1])
    assert set(one) == {"answer", "score", "block_id", "title", "evidence"} and one["answer"] == expected[1].answer
    with pytest.raises(ValueError, match="empty question"):
        qa("   ")


def test_pipeline_from_a_saved_directory_loads_the_index(model, openqa_tokenizer, tmp_path):
    save_realm(tmp_path / "saved", model, openqa_tokenizer, model.retriever)
    qa = pipeline("realm-open-qa", model=str(tmp_path / "saved"))
    assert qa.model.retriever is not None and len(qa.model.retriever.index) == len(model.retriever.index)
    assert qa(QUESTIONS[1])["answer"] == answer_questions(model, openqa_tokenizer, [QUESTIONS[1]])[0].answer
    bare = RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors")
    with pytest.raises(ValueError, match="knowledge index"):
        pipeline("realm-open-qa", model=bare, tokenizer=openqa_tokenizer)
