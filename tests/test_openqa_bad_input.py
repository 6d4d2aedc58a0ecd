"""Bad input during open-QA evaluation is reported, never fatal: empty questions, questions longer than the reader
length, answers absent from every block, answer regexes that do not compile, and a question the model fails on."""

import json
import logging

import pytest

from realm_hf import RealmForOpenQA
from realm_hf.evaluation.open_qa import evaluate_open_qa
from realm_hf.evaluation.qa_data import load_curatedtrec
from realm_hf.inference import answer_questions

from .utils import REFERENCE, openqa_retriever


QUESTIONS = json.loads((REFERENCE / "openqa" / "questions.json").read_text())


@pytest.fixture
def model(openqa_tokenizer, blocks):
    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    return RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors", retriever=retriever).eval()


def test_empty_questions_are_reported_and_counted(model, openqa_tokenizer):
    data = [QUESTIONS[1], {"question": "", "answers": ["paris"]}, {"question": "   ", "answers": ["x"]}, QUESTIONS[4]]
    data.append({"question": None, "answers": ["berlin"]})
    result = evaluate_open_qa(model, openqa_tokenizer, data, batch_size=2, return_predictions=True)
    assert result["num_questions"] == 5 and result["num_empty_questions"] == 3 and result["num_failed"] == 0
    errors = [p["error"] for p in result["predictions"]]
    assert errors == [None, "empty question", "empty question", None, "empty question"]
    alone = evaluate_open_qa(model, openqa_tokenizer, [QUESTIONS[1], QUESTIONS[4]], return_predictions=True)
    kept = [p["prediction"] for i, p in enumerate(result["predictions"]) if i in (0, 3)]
    assert kept == [p["prediction"] for p in alone["predictions"]]  # the empty questions change nothing else


def test_questions_longer_than_the_reader_are_truncated_with_a_warning(model, openqa_tokenizer, caplog):
    reader_len = model.config.reader_seq_len
    long_question = "what is the capital of " + " ".join(["france"] * (3 * reader_len)) + "?"
    assert len(openqa_tokenizer(long_question).input_ids) > reader_len
    with caplog.at_level(logging.WARNING, logger="realm_hf.inference"):
        answers = answer_questions(model, openqa_tokenizer, [long_question, QUESTIONS[1]["question"]], batch_size=2)
    assert all(a.error is None for a in answers) and answers[0].block_id >= 0
    assert "truncated" in caplog.text and "0 (" in caplog.text
    result = evaluate_open_qa(model, openqa_tokenizer, [{"question": long_question, "answers": ["paris"]}])
    assert result["num_failed"] == 0 and result["num_questions"] == 1
    with pytest.raises(ValueError, match="max_position_embeddings"):
        answer_questions(
            model, openqa_tokenizer, ["who?"], max_question_length=model.config.max_position_embeddings + 1
        )


def test_answers_absent_from_every_block_count_as_wrong(model, openqa_tokenizer):
    data = [
        {"question": "what is the capital of france?", "answers": ["okapi", "zebra crossing"]},
        {"question": "who was a computer scientist?", "answers": []},
        QUESTIONS[1],
    ]
    k = len(model.retriever.index)
    result = evaluate_open_qa(model, openqa_tokenizer, data, k=k, return_predictions=True)
    absent, without, paris = result["predictions"]
    assert not absent["exact_match"] and not absent["retrieved_at_k"] and absent["error"] is None
    assert not without["exact_match"] and not without["retrieved_at_k"]
    assert paris["retrieved_at_k"]  # searched over every block: only the answer in the corpus is found
    assert result["num_without_answers"] == 1 and result["num_retrieved_at_k"] == 1


def test_answer_regex_that_does_not_compile_is_reported(model, openqa_tokenizer, tmp_path, caplog):
    trec = tmp_path / "curated.tsv"
    trec.write_text(
        "1\tfactoid\twhat is the capital of france?\tpar(is|ee)\n"
        "2\tfactoid\twhat is the capital of germany?\tber[lin\n"
        "3\tfactoid\twho was a computer scientist?\t(alan\n"
    )
    with caplog.at_level(logging.WARNING, logger="realm_hf.evaluation.metrics"):
        dataset = load_curatedtrec(trec)
    assert "do not compile" in caplog.text and "line 2: 'ber[lin'; line 3: '(alan'" in caplog.text
    assert "line 1" not in caplog.text
    assert len(dataset) == 3 and set(dataset["answer_type"]) == {"regex"}
    caplog.clear()
    k = len(model.retriever.index)
    with caplog.at_level(logging.WARNING, logger="realm_hf.evaluation.metrics"):
        result = evaluate_open_qa(model, openqa_tokenizer, dataset, k=k, return_predictions=True)
    assert "2 answer regular expression(s) in the evaluation set do not compile" in caplog.text
    assert "question 1: 'ber[lin'; question 2: '(alan'" in caplog.text
    assert result["num_questions"] == 3 and result["num_regex_questions"] == 3 and result["num_invalid_regex"] == 2
    france, germany, turing = result["predictions"]
    assert france["retrieved_at_k"]  # the valid pattern is searched in the raw block text
    assert not germany["retrieved_at_k"] and not germany["exact_match"]
    assert not turing["retrieved_at_k"] and not turing["exact_match"]
    # Scored as text (the old behaviour), the patterns are normalised strings: "ber[lin" and "(alan" lose their
    # brackets and are "found", "par(is|ee)" is not.
    as_text = evaluate_open_qa(model, openqa_tokenizer, dataset, k=k, answer_type="text", return_predictions=True)
    assert [p["retrieved_at_k"] for p in as_text["predictions"]] == [False, True, True]
    assert as_text["num_invalid_regex"] == 0 and as_text["num_regex_questions"] == 0


def test_a_question_the_model_fails_on_does_not_lose_the_other_answers(model, openqa_tokenizer, caplog):
    original = model.forward
    poison = openqa_tokenizer("what boils at one hundred degrees?").input_ids

    def failing_forward(input_ids, **kwargs):
        if any(row[: len(poison)].tolist() == poison for row in input_ids):
            raise RuntimeError("reader input too short")
        return original(input_ids, **kwargs)

    model.forward = failing_forward
    with caplog.at_level(logging.WARNING, logger="realm_hf.inference"):
        result = evaluate_open_qa(model, openqa_tokenizer, QUESTIONS, batch_size=2, return_predictions=True)
    model.forward = original
    assert "retrying one by one" in caplog.text
    assert result["num_questions"] == len(QUESTIONS) and result["num_failed"] == 1
    errors = [p["error"] for p in result["predictions"]]
    assert errors[3] == "RuntimeError: reader input too short"
    assert errors[:3] + errors[4:] == [None] * (len(QUESTIONS) - 1)
    expected = evaluate_open_qa(model, openqa_tokenizer, QUESTIONS, batch_size=1, return_predictions=True)
    for i in (0, 1, 2, 4):
        assert result["predictions"][i]["prediction"] == expected["predictions"][i]["prediction"]


def test_a_bug_in_the_model_is_raised_not_turned_into_an_answer(model, openqa_tokenizer):
    original = model.forward

    def buggy_forward(input_ids, **kwargs):
        raise TypeError("forward() got an unexpected keyword argument")

    model.forward = buggy_forward
    try:
        with pytest.raises(TypeError, match="unexpected keyword"):
            evaluate_open_qa(model, openqa_tokenizer, QUESTIONS, batch_size=2)
    finally:
        model.forward = original
