"""Tests for the open-QA question loaders (`realm_hf/evaluation/qa_data.py`).

The first part writes small files into `tmp_path`. The second part loads the real benchmark files from the project's
shared data folder when it is present next to the repository (`<repo>/../shared/data`) and checks the row counts
given in the data READMEs.
"""

import json
import logging
from pathlib import Path

import pytest

from realm_hf.evaluation.metrics import compute_open_qa_scores
from realm_hf.evaluation.qa_data import (
    QADataError,
    load_curatedtrec,
    load_nq_open,
    load_qa_file,
    load_squad_open,
    load_webquestions,
)


DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
requires_shared_data = pytest.mark.skipif(
    not DATA_DIR.exists(), reason=f"shared benchmark data not found at {DATA_DIR}"
)


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def _jsonl(*objects) -> str:
    return "".join(json.dumps(obj) + "\n" for obj in objects)


# ---------------------------------------------------------------------------------------------------------------------
# Small hand-written files
# ---------------------------------------------------------------------------------------------------------------------


def test_nq_jsonl(tmp_path):
    path = _write(
        tmp_path / "nq.jsonl",
        _jsonl(
            {"question": "when was the last time anyone was on the moon", "answer": ["14 December 1972 UTC", "1972"]},
            {"question": "who wrote it", "answers": "Bob Russell", "def_correct_predictions": ["x"]},
        ),
    )
    ds = load_nq_open(path)
    assert ds.column_names == ["question", "answers", "answer_type"]
    assert ds["question"] == ["when was the last time anyone was on the moon", "who wrote it"]
    assert ds["answers"] == [["14 December 1972 UTC", "1972"], ["Bob Russell"]]
    assert ds["answer_type"] == ["text", "text"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_question_tab_answer_list(tmp_path, newline):
    # Second line is CSV-quoted the way DPR's files are: the field is wrapped in quotes and inner quotes are doubled.
    path = _write(
        tmp_path / "topics.test.txt",
        "who got the first nobel prize in physics\t['Wilhelm Conrad R\u00f6ntgen']\n"
        'who sings the theme\t"[\'Solange Knowles\', ""Destiny \'s Child""]"\n'
        "which mode\t['Olivia', 'MFSK']\n",
        newline=newline,
    )
    ds = load_nq_open(path)
    assert ds["question"] == ["who got the first nobel prize in physics", "who sings the theme", "which mode"]
    assert ds["answers"] == [
        ["Wilhelm Conrad R\u00f6ntgen"],
        ["Solange Knowles", "Destiny 's Child"],
        ["Olivia", "MFSK"],
    ]


def test_curatedtrec_tsv(tmp_path):
    path = _write(
        tmp_path / "large-test.tsv",
        "1669\tfactoid\tHow tall is Mount McKinley?\t20\\s?,?\\s?(32|40)0\\s?f(ee|oo)t|6,194-meter\n"
        '825\tfactoid\t"The Muppets" was created by whom?\tHenson\n'
        "462\tfactoid\tWhat is measured in curies?\tradiation|Sievert \\(Sv\\)\\\t1 Sv\n",
    )
    ds = load_curatedtrec(path)
    assert ds.column_names == ["question", "answers", "answer_type", "id"]
    assert ds["id"] == ["1669", "825", "462"]
    assert ds["question"][1] == '"The Muppets" was created by whom?'
    assert ds["answers"][2] == ["radiation|Sievert \\(Sv\\)\\\t1 Sv"]  # the tab inside the regex is kept
    assert set(ds["answer_type"]) == {"regex"}
    scores = compute_open_qa_scores(
        ["20,320 feet", "Jim Henson", "radiation"], ds["answers"], answer_type=ds[0]["answer_type"]
    )
    assert scores == pytest.approx({"exact_match": 100.0 * 2 / 3, "invalid_regex_count": 0})


def test_curatedtrec_jsonl(tmp_path):
    path = _write(tmp_path / "topics.dpr.curated.test.txt", _jsonl({"question": "q?", "answer": ["China|PRC"]}))
    ds = load_curatedtrec(path)
    assert ds[0] == {"question": "q?", "answers": ["China|PRC"], "answer_type": "regex"}


def test_webquestions_json_array(tmp_path):
    path = _write(
        tmp_path / "main_test.json",
        "[\n"
        ' {"qId": "wqs000000", "answers": ["Jamaican English"], "qText": "what does jamaican people speak?"},\n'
        ' {"qId": "wqs000001", "answers": ["Lawyer"], "qText": "what did james k polk do?"}\n'
        "]\n",
    )
    ds = load_webquestions(path)
    assert ds["id"] == ["wqs000000", "wqs000001"]
    assert ds["question"] == ["what does jamaican people speak?", "what did james k polk do?"]
    assert ds["answers"] == [["Jamaican English"], ["Lawyer"]]


def test_empty_questions_are_skipped_with_one_warning(tmp_path, caplog):
    path = _write(
        tmp_path / "nq.jsonl",
        _jsonl({"question": "q1", "answer": ["a"]})
        + "\n"  # line 2: blank
        + _jsonl({"question": "   ", "answer": ["b"]}, {"question": "q4", "answer": ["c"]})
        + "\n\n",  # blank lines at the end of the file are not reported
    )
    with caplog.at_level(logging.WARNING, logger="realm_hf.evaluation.qa_data"):
        ds = load_nq_open(path)
    assert ds["question"] == ["q1", "q4"]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Skipped 2 record(s)" in warnings[0].getMessage()
    assert "line(s) 2, 3" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()


def test_empty_question_in_tsv_is_skipped(tmp_path, caplog):
    path = _write(tmp_path / "t.txt", "q1\t['a']\n\t['b']\nq3\t['c']\n")
    with caplog.at_level(logging.WARNING, logger="realm_hf.evaluation.qa_data"):
        ds = load_nq_open(path)
    assert ds["question"] == ["q1", "q3"]
    assert "Skipped 1 record(s)" in caplog.text and "line(s) 2" in caplog.text


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_nq_open(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="passages.jsonl"):
        load_squad_open(tmp_path / "passages.jsonl", tmp_path / "qa.jsonl")


@pytest.mark.parametrize(
    ("name", "content", "line", "reason"),
    [
        ("bad.jsonl", '{"question": "q1", "answer": ["a"]}\n{"question": "q2", "answer": [\n', 2, "invalid JSON"),
        ("bad.jsonl", '{"question": "q1", "answer": ["a"]}\n{"question": "q2"}\n', 2, "missing the answer field"),
        ("bad.jsonl", '{"question": "q1", "answer": [1, 2]}\n', 1, "list of strings"),
        ("bad.jsonl", '["q1", ["a"]]\n', 1, "expected a JSON object"),
        ("bad.txt", "q1\t['a']\nq2\t['b']\nq3\t['c'\n", 3, "not a Python list literal"),
        ("bad.txt", "q1\t['a']\nq2\t'b' 'c'\n", 2, "must be a list of strings"),
        ("bad.txt", "q1\t['a']\nq2\n", 2, "expected 2 tab-separated fields"),
        ("bad.txt", "q1\tx\ty\n", None, "cannot detect the file format"),
        ("bad.tsv", "1\tfactoid\tq1\tA|B\n2\tfactoid\tq2\n", 2, "expected 4 tab-separated fields"),
        ("bad.json", '[\n {"qText": "q1", "answers": ["a"]},\n {"qText": "q2"}\n]\n', 3, "missing the answer"),
        ("bad.json", '[\n {"qText": "q1", "answers": ["a"]},\n', 3, "invalid JSON"),
        ("empty.jsonl", "\n\n", None, "contains no"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, name, content, line, reason):
    path = _write(tmp_path / name, content)
    with pytest.raises(QADataError, match=reason) as excinfo:
        load_qa_file(path)
    error = excinfo.value
    assert error.path == str(path)
    assert error.line_number == line
    assert str(path) in str(error)
    if line is not None:
        assert f"line {line}:" in str(error)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "q1", "answer": ["a"]}\n{"question": "caf\xe9", "answer": ["b"]}\n')
    with pytest.raises(QADataError, match=r"line 2: not valid UTF-8"):
        load_nq_open(path)


def test_explicit_format(tmp_path):
    path = _write(tmp_path / "weird.dat", '{"question": "q", "answer": ["a"]}\n')
    assert load_qa_file(path, file_format="jsonl")["question"] == ["q"]
    with pytest.raises(QADataError, match="line 1"):
        load_qa_file(path, file_format="qa_tsv")
    with pytest.raises(ValueError, match="file_format"):
        load_qa_file(path, file_format="csv")
    with pytest.raises(ValueError, match="answer_type"):
        load_qa_file(path, answer_type="fuzzy")


def _squad_files(tmp_path, qa_objects, passage_objects=None):
    passages = passage_objects or [
        {"id": "Warsaw_0", "title": "Warsaw", "text": "Maria Sklodowska-Curie won the Nobel Prize."},
        {"id": "Warsaw_1", "title": "Warsaw", "text": "Casimir Pulaski was born in 1745."},
    ]
    return _write(tmp_path / "passages.jsonl", _jsonl(*passages)), _write(tmp_path / "qa.jsonl", _jsonl(*qa_objects))


def test_squad_open(tmp_path):
    passages_path, qa_path = _squad_files(
        tmp_path,
        [
            {"id": "q1", "question": "First female recipient of?", "answers": ["Nobel Prize"] * 3, "title": "Warsaw",
             "passage_id": "Warsaw_0"},
            {"id": "q2", "question": "Year Pulaski was born?", "answers": ["1745"], "title": "Warsaw",
             "passage_id": "Warsaw_1"},
        ],
    )  # fmt: skip
    passages, questions = load_squad_open(passages_path, qa_path)
    assert passages.column_names == ["passage_id", "title", "text"]
    assert passages["passage_id"] == ["Warsaw_0", "Warsaw_1"]
    assert questions.column_names == ["question", "answers", "answer_type", "id", "title", "gold_passage_id"]
    assert questions["gold_passage_id"] == ["Warsaw_0", "Warsaw_1"]
    assert questions["answers"][0] == ["Nobel Prize"] * 3  # duplicates kept, as in SQuAD
    assert questions["id"] == ["q1", "q2"]
    assert set(questions["answer_type"]) == {"text"}


def test_squad_open_unknown_gold_passage(tmp_path):
    passages_path, qa_path = _squad_files(
        tmp_path,
        [
            {"id": "q1", "question": "a?", "answers": ["x"], "title": "Warsaw", "passage_id": "Warsaw_0"},
            {"id": "q2", "question": "b?", "answers": ["y"], "title": "Warsaw", "passage_id": "Warsaw_9"},
        ],
    )
    with pytest.raises(QADataError, match=r"qa\.jsonl, line 2: gold passage 'Warsaw_9'"):
        load_squad_open(passages_path, qa_path)


def test_squad_open_duplicate_passage(tmp_path):
    passages_path, qa_path = _squad_files(
        tmp_path,
        [{"id": "q1", "question": "a?", "answers": ["x"], "passage_id": "P_0"}],
        passage_objects=[{"id": "P_0", "title": "P", "text": "one"}, {"id": "P_0", "title": "P", "text": "two"}],
    )
    with pytest.raises(QADataError, match=r"passages\.jsonl, line 2: duplicate passage id 'P_0' \(first on line 1\)"):
        load_squad_open(passages_path, qa_path)


# ---------------------------------------------------------------------------------------------------------------------
# Real benchmark files (row counts from the READMEs in shared/data)
# ---------------------------------------------------------------------------------------------------------------------


@requires_shared_data
@pytest.mark.parametrize(
    ("loader", "relative_path", "num_rows", "answer_type"),
    [
        (load_nq_open, "nq_open/NQ-open.dev.jsonl", 3610, "text"),  # the NQ-Open test set of ORQA/REALM
        (load_nq_open, "nq_open/topics.nq.test.txt", 3610, "text"),
        (load_nq_open, "nq_open/topics.dpr.nq.test.txt", 3610, "text"),
        (load_nq_open, "nq_open/topics.nq.dev.txt", 8757, "text"),
        (load_nq_open, "nq_open/topics.dpr.nq.dev.txt", 8757, "text"),
        (load_nq_open, "nq_open/NQ-open.efficientqa.dev.1.1.jsonl", 1800, "text"),
        (load_nq_open, "nq_open/NQ-open.efficientqa.test.1.1.jsonl", 1769, "text"),
        (load_webquestions, "webquestions/topics.dpr.wq.test.txt", 2032, "text"),
        (load_webquestions, "webquestions/brmson_main_test.json", 2032, "text"),
        (load_webquestions, "webquestions/brmson_main_trainmodel.json", 2834, "text"),
        (load_webquestions, "webquestions/brmson_main_val.json", 755, "text"),
        (load_webquestions, "webquestions/brmson_main_devtest.json", 189, "text"),
        (load_curatedtrec, "curatedtrec/large2180-test.tsv", 694, "regex"),
        (load_curatedtrec, "curatedtrec/topics.dpr.curated.test.txt", 694, "regex"),
        (load_curatedtrec, "curatedtrec/large2180-train.tsv", 1479, "regex"),
        (load_qa_file, "triviaqa_open/topics.dpr.trivia.test.txt", 11313, "text"),
    ],
)
def test_real_question_sets(loader, relative_path, num_rows, answer_type, caplog):
    with caplog.at_level(logging.WARNING, logger="realm_hf.evaluation.qa_data"):
        ds = loader(DATA_DIR / relative_path)
    assert len(ds) == num_rows
    assert not caplog.records  # no empty questions in the published files
    assert set(ds["answer_type"]) == {answer_type}
    assert all(question.strip() for question in ds["question"])
    assert all(answers and all(isinstance(answer, str) for answer in answers) for answers in ds["answers"])


@requires_shared_data
def test_real_nq_test_files_hold_the_same_questions():
    jsonl = load_nq_open(DATA_DIR / "nq_open" / "NQ-open.dev.jsonl")
    topics = load_nq_open(DATA_DIR / "nq_open" / "topics.nq.test.txt")
    assert sorted(jsonl["question"]) == sorted(topics["question"])


@requires_shared_data
def test_real_webquestions_test_files_align():
    dpr = load_webquestions(DATA_DIR / "webquestions" / "topics.dpr.wq.test.txt")
    brmson = load_webquestions(DATA_DIR / "webquestions" / "brmson_main_test.json")
    assert dpr["question"] == brmson["question"]
    assert brmson["id"][0] == "wqs000000"
    # The README: answer lists are identical for 2,027 of the 2,032 questions.
    assert sum(a == b for a, b in zip(dpr["answers"], brmson["answers"])) == 2027


@requires_shared_data
def test_real_curatedtrec_regexes_compile_and_files_align():
    tsv = load_curatedtrec(DATA_DIR / "curatedtrec" / "large2180-test.tsv")
    dpr = load_curatedtrec(DATA_DIR / "curatedtrec" / "topics.dpr.curated.test.txt")
    assert tsv["question"] == dpr["question"]
    # Invalid patterns would count as wrong answers: none of the published ones is invalid.
    scores = compute_open_qa_scores([""] * len(tsv), tsv["answers"], answer_type="regex")
    assert scores["invalid_regex_count"] == 0


@requires_shared_data
@pytest.mark.parametrize(("split", "num_questions"), [("train", 6382), ("dev", 1656)])
def test_real_squad_open(split, num_questions):
    passages, questions = load_squad_open(
        DATA_DIR / "squad_open" / "squad_v1.1_dev_passages.jsonl",
        DATA_DIR / "squad_open" / f"squad_v1.1_dev_qa.{split}.jsonl",
    )
    assert len(passages) == 2067
    assert len(questions) == num_questions
    assert passages[0]["passage_id"] == "Super_Bowl_50_0"
    text_by_id = dict(zip(passages["passage_id"], passages["text"]))
    # The README: every answer string occurs in its gold paragraph.
    for answers, gold in zip(questions["answers"], questions["gold_passage_id"]):
        assert all(answer in text_by_id[gold] for answer in answers)
