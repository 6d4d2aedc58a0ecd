"""Tests for the open-QA metric (`realm_hf/evaluation/metrics/open_qa/open_qa.py`), direct and through `evaluate.load`.

Every expected number below was worked out by hand; the comments show the arithmetic.
"""

import math
import warnings

import pytest

from realm_hf.evaluation.metrics import (
    OPEN_QA_METRIC_PATH,
    OpenQA,
    compute_open_qa_scores,
    exact_match_score,
    f1_score,
    load_open_qa_metric,
    normalize_answer,
    regex_match_score,
)


MCKINLEY = r"20\s?,?\s?(32|40)0\s?-?\s?f(ee|oo)t|6,194-meter|20,?237\s*f(oo|ee)?t"

# Text mode: per-question EM / F1 worked out by hand.
TEXT_PREDICTIONS = ["The Eiffel Tower!", "Bob Russell", "14 December 1972", "", "the big red dog"]
TEXT_REFERENCES = [
    ["eiffel tower"],  # articles, punctuation and case removed -> EM 1, F1 1
    ["Bobby Scott", "Bob Russell"],  # second gold answer matches -> EM 1, F1 1
    ["December 1972 UTC"],  # tokens {14, december, 1972} vs {december, 1972, utc}: P = R = 2/3 -> F1 2/3
    ["one"],  # empty prediction -> EM 0, F1 0
    ["red dog", "a dog"],  # {big, red, dog} vs {red, dog}: P 2/3, R 1 -> F1 0.8; vs {dog}: P 1/3, R 1 -> 0.5
]
TEXT_EXPECTED = {
    "exact_match": 100.0 * 2 / 5,
    "f1": 100.0 * (1 + 1 + 2 / 3 + 0 + 0.8) / 5,
}

# Regex mode (CuratedTREC): re.match on the raw prediction, case-insensitive.
REGEX_PREDICTIONS = ["20,320 feet", "about 20,320 feet", "after the fall", "Chinese", "Paris", "x", "China's"]
REGEX_REFERENCES = [
    [MCKINLEY],  # matches at the start -> 1
    [MCKINLEY],  # pattern only occurs later in the string; re.match is anchored at the start -> 0
    ["After the Fall|Finishing the Play"],  # case-insensitive -> 1
    ["China"],  # "Chin" + "e" != "a" -> 0
    ["(unclosed", "Paris"],  # first pattern is invalid (reported), second matches -> 1
    ["[a-"],  # only an invalid pattern -> 0
    ["China"],  # prefix match: re.match does not require the whole string -> 1
]
REGEX_EXPECTED = {"exact_match": 100.0 * 4 / 7, "invalid_regex_count": 2}


@pytest.fixture(scope="module")
def loaded_text_metric(tmp_path_factory):
    return load_open_qa_metric(cache_dir=str(tmp_path_factory.mktemp("metric_cache")))


@pytest.fixture(scope="module")
def loaded_regex_metric(tmp_path_factory):
    return load_open_qa_metric("regex", cache_dir=str(tmp_path_factory.mktemp("metric_cache_regex")))


def _assert_scores_equal(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert math.isclose(actual[key], value, rel_tol=1e-12, abs_tol=1e-12), (key, actual[key], value)


# ---------------------------------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  New   York\tCity \n", "new york city"),
        ("an apple a day", "apple day"),
        ("Theater", "theater"),  # "the" inside a word is not an article
        ("U.S.A.", "usa"),
        ("", ""),
        (None, ""),
        ("A", ""),
        ("Ro\u0308ntgen", "ro\u0308ntgen"),
        ("R\u00f6ntgen", "ro\u0308ntgen"),  # NFD: the precomposed o-umlaut is decomposed
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_score():
    assert exact_match_score("The Eiffel Tower!", "eiffel tower")
    assert exact_match_score("R\u00f6ntgen", "Ro\u0308ntgen")
    assert not exact_match_score("Eiffel", "Eiffel Tower")
    assert not exact_match_score("", "one")
    assert exact_match_score("", "the")  # both normalise to the empty string


def test_f1_score():
    assert f1_score("14 December 1972", "December 1972 UTC") == pytest.approx(2 / 3)
    assert f1_score("the big red dog", "red dog") == pytest.approx(0.8)
    assert f1_score("red red dog", "red dog") == pytest.approx(0.8)  # P 2/3 (one "red" unmatched), R 1
    assert f1_score("cat", "dog") == 0.0
    assert f1_score("", "dog") == 0.0
    assert f1_score("", "") == 1.0


def test_regex_match_score():
    assert regex_match_score("20,320 feet", MCKINLEY)
    assert regex_match_score("6,194-meter peak", MCKINLEY)
    assert not regex_match_score("about 20,320 feet", MCKINLEY)
    assert regex_match_score("AFTER THE FALL", "After the Fall|Finishing the Play")
    assert not regex_match_score("The China", "China")  # the raw prediction is not normalised
    assert not regex_match_score("anything", "(unclosed")
    assert not regex_match_score("", "x")
    assert regex_match_score("", "x?")


# ---------------------------------------------------------------------------------------------------------------------
# Metric: direct instantiation, evaluate.load(path) and the pure aggregate must agree
# ---------------------------------------------------------------------------------------------------------------------


def test_text_scores_direct():
    metric = OpenQA(keep_in_memory=True)
    _assert_scores_equal(metric.compute(predictions=TEXT_PREDICTIONS, references=TEXT_REFERENCES), TEXT_EXPECTED)
    _assert_scores_equal(compute_open_qa_scores(TEXT_PREDICTIONS, TEXT_REFERENCES), TEXT_EXPECTED)


def test_text_scores_loaded_agree_with_direct(loaded_text_metric):
    loaded = loaded_text_metric.compute(predictions=TEXT_PREDICTIONS, references=TEXT_REFERENCES)
    direct = OpenQA(keep_in_memory=True).compute(predictions=TEXT_PREDICTIONS, references=TEXT_REFERENCES)
    _assert_scores_equal(loaded, TEXT_EXPECTED)
    assert loaded == direct


def test_loaded_metric_comes_from_package_file(loaded_text_metric):
    assert OPEN_QA_METRIC_PATH.is_file()
    assert OPEN_QA_METRIC_PATH.parent.name == "open_qa"
    assert type(loaded_text_metric).__name__ == "OpenQA"
    assert loaded_text_metric.name == "open_qa"


def test_regex_scores_direct_and_loaded(loaded_regex_metric):
    with pytest.warns(UserWarning, match=r"question 4: '\(unclosed'.*question 5: '\[a-'"):
        direct = OpenQA(config_name="regex", keep_in_memory=True).compute(
            predictions=REGEX_PREDICTIONS, references=REGEX_REFERENCES
        )
    with pytest.warns(UserWarning, match="did not compile"):
        loaded = loaded_regex_metric.compute(predictions=REGEX_PREDICTIONS, references=REGEX_REFERENCES)
    with pytest.warns(UserWarning, match="did not compile"):
        by_kwarg = OpenQA(keep_in_memory=True).compute(
            predictions=REGEX_PREDICTIONS, references=REGEX_REFERENCES, answer_type="regex"
        )
    _assert_scores_equal(direct, REGEX_EXPECTED)
    assert loaded == direct == by_kwarg


def test_invalid_regex_is_logged(caplog):
    with caplog.at_level("WARNING"), pytest.warns(UserWarning):
        scores = compute_open_qa_scores(["abc"], [["a(b"]], answer_type="regex")
    assert scores == {"exact_match": 0.0, "invalid_regex_count": 1}
    assert "question 0: 'a(b'" in caplog.text


def test_valid_regexes_emit_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = compute_open_qa_scores(["China"], [["china|prc"]], answer_type="regex")
    assert scores == {"exact_match": 100.0, "invalid_regex_count": 0}


def test_empty_predictions(loaded_text_metric):
    expected = {"exact_match": 0.0, "f1": 0.0}
    _assert_scores_equal(
        OpenQA(keep_in_memory=True).compute(predictions=["", ""], references=[["a b"], ["c"]]), expected
    )
    _assert_scores_equal(loaded_text_metric.compute(predictions=["", ""], references=[["a b"], ["c"]]), expected)


def test_bare_string_reference_is_one_answer():
    # Without wrapping, "Paris" would be stored as the answer list ["P", "a", "r", "i", "s"].
    scores = OpenQA(keep_in_memory=True).compute(predictions=["paris", "P"], references=["Paris", "Paris"])
    _assert_scores_equal(scores, {"exact_match": 50.0, "f1": 50.0})


def test_add_batch_accumulates(loaded_text_metric):
    for metric in (OpenQA(keep_in_memory=True), loaded_text_metric):
        metric.add_batch(predictions=TEXT_PREDICTIONS[:2], references=TEXT_REFERENCES[:2])
        metric.add_batch(predictions=TEXT_PREDICTIONS[2:], references=TEXT_REFERENCES[2:])
        _assert_scores_equal(metric.compute(), TEXT_EXPECTED)


@pytest.mark.parametrize("use_loaded", [False, True])
def test_length_mismatch_raises(use_loaded, loaded_text_metric):
    metric = loaded_text_metric if use_loaded else OpenQA(keep_in_memory=True)
    with pytest.raises(ValueError, match=r"3 predictions but 2 references"):
        metric.compute(predictions=["a", "b", "c"], references=[["a"], ["b"]])
    with pytest.raises(ValueError, match=r"1 predictions but 2 references"):
        compute_open_qa_scores(["a"], [["a"], ["b"]])


def test_unknown_answer_type():
    with pytest.raises(ValueError, match="answer_type"):
        compute_open_qa_scores(["a"], [["a"]], answer_type="fuzzy")
    with pytest.raises(ValueError, match="answer_type"):
        load_open_qa_metric("fuzzy")


def test_no_answers_counts_as_wrong():
    assert compute_open_qa_scores(["a"], [[]]) == {"exact_match": 0.0, "f1": 0.0}
    assert compute_open_qa_scores([], []) == {"exact_match": 0.0, "f1": 0.0}
