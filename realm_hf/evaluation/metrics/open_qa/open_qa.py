# Copyright 2025 The realm_hf authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Open-domain QA metric (exact match, token F1, regex match) as used by ORQA and REALM.

This file is a self-contained `evaluate` module: it can be loaded with `evaluate.load("<path>/open_qa.py")` (no Hub
access needed) or imported directly (`from realm_hf.evaluation.metrics import OpenQA`). It must only import installed packages,
one import per line, because `evaluate` parses the imports of a metric script before loading it.
"""

import logging
import re
import string
import unicodedata
import warnings
from collections import Counter
from collections.abc import Sequence

import datasets
import evaluate


logger = logging.getLogger(__name__)  # a metric script loads outside the package: no relative imports

_CITATION = """\
@inproceedings{guu2020realm,
  title = {{REALM}: Retrieval-Augmented Language Model Pre-Training},
  author = {Guu, Kelvin and Lee, Kenton and Tung, Zora and Pasupat, Panupong and Chang, Ming-Wei},
  booktitle = {Proceedings of the 37th International Conference on Machine Learning},
  year = {2020},
}
@inproceedings{lee2019latent,
  title = {Latent Retrieval for Weakly Supervised Open Domain Question Answering},
  author = {Lee, Kenton and Chang, Ming-Wei and Toutanova, Kristina},
  booktitle = {Proceedings of the 57th Annual Meeting of the Association for Computational Linguistics},
  year = {2019},
}
"""

_DESCRIPTION = """\
Open-domain question answering metric of ORQA/REALM (`orqa/utils/eval_utils.py`).

* `exact_match`: a prediction is correct if, after normalisation (Unicode NFD, lowercase, ASCII punctuation removed,
  articles a/an/the removed, whitespace collapsed), it equals the normalised form of any of the reference answers.
* `f1`: SQuAD token-level F1 between the normalised prediction and each reference, maximised over the references.
* regex mode (CuratedTREC): each reference is a regular expression; a prediction is correct if
  `re.compile(reference, re.IGNORECASE | re.UNICODE | re.MULTILINE).match(prediction)` succeeds on the raw (not
  normalised) prediction, i.e. the pattern is anchored at the start of the prediction only. A reference that does
  not compile counts as non-matching and is reported.

Scores are averaged over questions and reported as percentages (0-100), like the SQuAD metric.
"""

_KWARGS_DESCRIPTION = """
Computes open-domain QA scores.

Args:
    predictions (`list[str]`):
        One predicted answer string per question. An empty string is allowed and never matches a non-empty answer.
    references (`list[list[str]]`):
        For each question, the list of acceptable answers (or answer regular expressions in regex mode). A bare
        string is accepted as a one-answer list.
    answer_type (`str`, *optional*):
        `"text"` (exact match and F1) or `"regex"` (regular-expression match, CuratedTREC). Defaults to `"regex"`
        when the metric was loaded with `config_name="regex"`, else `"text"`.

Returns:
    `dict`:
        - `exact_match` (`float`): percentage of questions answered correctly.
        - `f1` (`float`, text mode only): mean of the per-question maximum token F1, as a percentage.
        - `invalid_regex_count` (`int`, regex mode only): number of references that failed to compile.

Examples:
    >>> import evaluate
    >>> open_qa = evaluate.load("path/to/open_qa.py")  # doctest: +SKIP
    >>> open_qa.compute(predictions=["the Eiffel Tower"], references=[["Eiffel Tower", "tour Eiffel"]])  # doctest: +SKIP
    {'exact_match': 100.0, 'f1': 100.0}
"""

ANSWER_TYPES = ("text", "regex")
_REGEX_FLAGS = re.IGNORECASE | re.UNICODE | re.MULTILINE
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b", flags=re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str | None) -> str:
    """
    Normalises an answer string the way ORQA/REALM (and, apart from the Unicode step, SQuAD) do.

    Steps: Unicode NFD decomposition, lowercasing, removal of ASCII punctuation, removal of the articles `a`, `an`
    and `the` (as whole words), and collapsing of whitespace.

    Args:
        text (`str` or `None`):
            The answer to normalise. `None` is treated as the empty string.

    Returns:
        `str`: The normalised answer.
    """
    if text is None:
        return ""
    text = unicodedata.normalize("NFD", text)
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str | None, ground_truth: str) -> bool:
    """
    Whether `prediction` equals `ground_truth` after [`normalize_answer`].

    Args:
        prediction (`str` or `None`):
            The predicted answer.
        ground_truth (`str`):
            One acceptable answer.

    Returns:
        `bool`: `True` when the normalised strings are equal.
    """
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str | None, ground_truth: str) -> float:
    """
    SQuAD token F1 between the normalised prediction and the normalised ground truth.

    When either side has no tokens after normalisation, the score is 1.0 if both are empty and 0.0 otherwise (the
    SQuAD v2 convention; the v1.1 script gives 0.0 in both cases).

    Args:
        prediction (`str` or `None`):
            The predicted answer.
        ground_truth (`str`):
            One acceptable answer.

    Returns:
        `float`: F1 in [0, 1].
    """
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    if not prediction_tokens or not ground_truth_tokens:
        return float(prediction_tokens == ground_truth_tokens)
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


def compile_answer_regex(pattern: str) -> re.Pattern | None:
    """
    Compiles a CuratedTREC answer pattern with the flags ORQA/DrQA use (`IGNORECASE | UNICODE | MULTILINE`).

    Args:
        pattern (`str`):
            The regular expression.

    Returns:
        `re.Pattern` or `None`: The compiled pattern, or `None` if it does not compile.
    """
    try:
        return re.compile(pattern, flags=_REGEX_FLAGS)
    except (re.error, TypeError, ValueError, OverflowError, RecursionError):
        return None


def regex_match_score(prediction: str | None, pattern: str) -> bool:
    """
    Whether the regular expression `pattern` matches the start of the raw `prediction` (`re.match`, as in
    `orqa/utils/eval_utils.py::regex_match_score` and DrQA).

    The prediction is not normalised. A pattern that does not compile counts as non-matching.

    Args:
        prediction (`str` or `None`):
            The predicted answer. `None` is treated as the empty string.
        pattern (`str`):
            One answer regular expression.

    Returns:
        `bool`: `True` on a match.
    """
    compiled = compile_answer_regex(pattern)
    if compiled is None:
        return False
    return compiled.match(prediction or "") is not None


def question_scores(prediction: str | None, answers: Sequence[str], answer_type: str = "text") -> tuple[float, float]:
    """
    Exact match and F1 of one prediction against the acceptable answers of one question: the maxima over its answers
    of [`exact_match_score`] and [`f1_score`], or for answer patterns, whether one matches ([`regex_match_score`]),
    as both scores (F1 is not defined for patterns).

    Args:
        prediction (`str` or `None`):
            The predicted answer.
        answers (`Sequence[str]`):
            The question's acceptable answers, or answer patterns with `answer_type="regex"`.
        answer_type (`str`, *optional*, defaults to `"text"`):
            `"text"` or `"regex"`.

    Returns:
        `tuple(float, float)`: exact match (0 or 1) and F1 (in [0, 1]).
    """
    if answer_type == "regex":
        matched = float(any(regex_match_score(prediction, pattern) for pattern in answers))
        return matched, matched
    exact = max((float(exact_match_score(prediction, answer)) for answer in answers), default=0.0)
    return exact, max((f1_score(prediction, answer) for answer in answers), default=0.0)


def _as_answer_list(reference: str | Sequence[str] | None) -> list[str]:
    if reference is None:
        return []
    if isinstance(reference, str):
        return [reference]
    return list(reference)


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} references: there must be exactly one "
            "reference list per prediction."
        )


def compute_open_qa_scores(
    predictions: Sequence[str | None],
    references: Sequence[str | Sequence[str]],
    answer_type: str = "text",
) -> dict[str, float | int]:
    """
    Computes the open-QA scores without the `evaluate` machinery.

    Args:
        predictions (`Sequence[str]`):
            One predicted answer per question (`None` or `""` for no answer).
        references (`Sequence[Sequence[str]]`):
            The acceptable answers (or answer patterns in regex mode) of each question.
        answer_type (`str`, *optional*, defaults to `"text"`):
            `"text"` or `"regex"`.

    Returns:
        `dict`: `exact_match` (percentage) and `f1` (percentage) in text mode; `exact_match` and
        `invalid_regex_count` in regex mode.

    Raises:
        `ValueError`: If the lengths differ or `answer_type` is unknown.
    """
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}.")
    _check_lengths(predictions, references)
    num_questions = len(predictions)

    if answer_type == "text":
        scores = [question_scores(p, _as_answer_list(r)) for p, r in zip(predictions, references)]
        em_total = sum(exact for exact, _ in scores)
        f1_total = sum(f1 for _, f1 in scores)
        return {
            "exact_match": 100.0 * em_total / num_questions if num_questions else 0.0,
            "f1": 100.0 * f1_total / num_questions if num_questions else 0.0,
        }

    matches = sum(question_scores(p, _as_answer_list(r), "regex")[0] for p, r in zip(predictions, references))
    invalid = [
        (index, pattern)
        for index, reference in enumerate(references)
        for pattern in _as_answer_list(reference)
        if compile_answer_regex(pattern) is None
    ]
    if invalid:
        details = "; ".join(f"question {index}: {pattern!r}" for index, pattern in invalid)
        message = f"{len(invalid)} answer regular expression(s) did not compile and count as non-matching: {details}"
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    return {
        "exact_match": 100.0 * matches / num_questions if num_questions else 0.0,
        "invalid_regex_count": len(invalid),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class OpenQA(evaluate.Metric):
    """
    `evaluate` metric for open-domain QA: exact match and F1 over answer lists, or regex match for CuratedTREC.

    Load it with `evaluate.load("<path>/open_qa.py")`, [`realm_hf.evaluation.metrics.load_open_qa_metric`] or instantiate it
    directly: `OpenQA()` (text answers) or `OpenQA(config_name="regex")` (answer regular expressions).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=[
                "https://github.com/google-research/language/blob/master/language/orqa/utils/eval_utils.py",
                "https://rajpurkar.github.io/SQuAD-explorer/",
            ],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Adds a batch of predictions and references after checking their lengths and wrapping bare strings."""
        if predictions is not None and references is not None:
            predictions = list(predictions)
            references = list(references)
            _check_lengths(predictions, references)
            predictions = ["" if prediction is None else prediction for prediction in predictions]
            references = [_as_answer_list(reference) for reference in references]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Adds one prediction and its reference answers (a bare string is wrapped in a list)."""
        if reference is not None:
            reference = _as_answer_list(reference)
        if prediction is None and reference is not None:
            prediction = ""
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, answer_type: str | None = None) -> dict[str, float | int]:
        if answer_type is None:
            answer_type = "regex" if self.config_name == "regex" else "text"
        return compute_open_qa_scores(predictions, references, answer_type=answer_type)
