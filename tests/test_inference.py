"""answer_questions and `realm-hf ask` on the reference open-QA fixture."""

import json

from realm_hf import RealmForOpenQA, save_realm
from realm_hf.cli import main
from realm_hf.inference import answer_questions

from .utils import REFERENCE, openqa_retriever


def _model(openqa_tokenizer, blocks):
    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    return RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors", retriever=retriever).eval()


def test_answers_match_the_reference_and_bad_questions_do_not_stop_the_batch(openqa_tokenizer, blocks):
    questions = json.loads((REFERENCE / "openqa" / "expected.json").read_text())["questions"]
    model = _model(openqa_tokenizer, blocks)
    texts = [q["question"] for q in questions]
    answers = answer_questions(model, openqa_tokenizer, [texts[0], "", texts[1], "   ", *texts[2:]], batch_size=2)
    good = [a for a in answers if a.error is None]
    expected = [openqa_tokenizer.decode(q["predicted_answer_ids"], skip_special_tokens=True) for q in questions]
    assert [a.answer for a in good] == expected
    assert [a.error for a in answers[1:4:2]] == ["empty question", "empty question"]
    for answer in good:
        assert answer.evidence == blocks[answer.block_id]
        assert answer.score > -1e30


def test_cli_ask(tmp_path, openqa_tokenizer, blocks, capsys):
    model = _model(openqa_tokenizer, blocks)
    save_realm(tmp_path / "model", model, openqa_tokenizer, model.retriever)
    question = json.loads((REFERENCE / "openqa" / "expected.json").read_text())["questions"][1]
    assert main(["ask", str(tmp_path / "model"), question["question"]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert lines[0]["answer"] == openqa_tokenizer.decode(question["predicted_answer_ids"], skip_special_tokens=True)
    assert main(["ask", str(tmp_path / "model")]) == 2
