"""Evaluation metrics for REALM open-domain QA.

The metric lives in `open_qa/open_qa.py`, a self-contained `evaluate` module script shipped as package data. It can be
used in three equivalent ways, all offline:

```py
>>> from realm_hf.evaluation.metrics import OpenQA, load_open_qa_metric
>>> OpenQA().compute(predictions=["Paris"], references=[["paris", "Paris, France"]])
{'exact_match': 100.0, 'f1': 100.0}
>>> load_open_qa_metric().compute(predictions=["Paris"], references=[["paris"]])  # through `evaluate.load`
{'exact_match': 100.0, 'f1': 100.0}
>>> OpenQA(config_name="regex").compute(predictions=["20,320 feet"], references=[[r"20,?320\\s*f(ee|oo)t"]])
{'exact_match': 100.0, 'invalid_regex_count': 0}
```

`evaluate.load(<local path>)` never contacts the Hub (checked with `evaluate` 0.4.6: no socket is opened), so no
environment variable is needed; it also works with `HF_HUB_OFFLINE=1` / `HF_EVALUATE_OFFLINE=1`. It copies the script
into `$HF_HOME/modules/evaluate_modules` (evaluate's `HF_MODULES_CACHE`) and imports it from there, so the class it
returns is a different Python class from [`OpenQA`], with identical behaviour.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import evaluate

from ...logging import get_logger
from .open_qa.open_qa import (
    ANSWER_TYPES,
    OpenQA,
    compile_answer_regex,
    compute_open_qa_scores,
    exact_match_score,
    f1_score,
    normalize_answer,
    question_scores,
    regex_match_score,
)


OPEN_QA_METRIC_PATH = Path(__file__).resolve().parent / "open_qa" / "open_qa.py"

logger = get_logger(__name__)


def warn_invalid_patterns(patterns: Iterable[tuple[str, str]], source: str) -> int:
    """Logs one warning naming the answer regular expressions that do not compile (they never match).

    Args:
        patterns (iterable of `(location, pattern)`):
            Answer patterns and where each comes from (for example `"line 12"` or `"question 3"`).
        source (`str`):
            What holds them (a file path, "the evaluation set").

    Returns:
        `int`: The number of patterns that do not compile.
    """
    invalid = [(location, pattern) for location, pattern in patterns if compile_answer_regex(pattern) is None]
    if invalid:
        shown = "; ".join(f"{location}: {pattern!r}" for location, pattern in invalid[:10])
        more = f" (and {len(invalid) - 10} more)" if len(invalid) > 10 else ""
        logger.warning(
            "%d answer regular expression(s) in %s do not compile and count as non-matching: %s%s.",
            len(invalid),
            source,
            shown,
            more,
        )
    return len(invalid)


def load_open_qa_metric(answer_type: str = "text", **kwargs: Any):
    """
    Loads the open-QA metric through `evaluate.load`, from the script inside the installed package.

    Args:
        answer_type (`str`, *optional*, defaults to `"text"`):
            `"text"` for exact match and F1 over answer strings, `"regex"` for CuratedTREC answer patterns. It
            becomes the metric's `config_name`.
        kwargs (`dict[str, Any]`, *optional*):
            Passed to `evaluate.load` (for example `cache_dir`, `keep_in_memory`, `experiment_id`).

    Returns:
        `evaluate.EvaluationModule`: The loaded metric.
    """
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}.")
    if not OPEN_QA_METRIC_PATH.is_file():
        raise FileNotFoundError(
            f"The open-QA metric script is missing at {OPEN_QA_METRIC_PATH}; the realm_hf installation is incomplete "
            "(the package data `evaluation/metrics/*/*.py` was not installed)."
        )
    config_name = "regex" if answer_type == "regex" else None
    return evaluate.load(str(OPEN_QA_METRIC_PATH), config_name=config_name, **kwargs)


__all__ = [
    "ANSWER_TYPES",
    "OPEN_QA_METRIC_PATH",
    "OpenQA",
    "compile_answer_regex",
    "compute_open_qa_scores",
    "exact_match_score",
    "f1_score",
    "load_open_qa_metric",
    "normalize_answer",
    "question_scores",
    "regex_match_score",
    "warn_invalid_patterns",
]
