"""Loaders for the open-domain QA question sets REALM is evaluated on.

Every loader returns a `datasets.Dataset` with at least the columns

- `question` (`str`),
- `answers` (`list[str]`): the acceptable answers (answer regular expressions for CuratedTREC),
- `answer_type` (`str`): `"text"` or `"regex"`, the mode to pass to the open-QA metric
  ([`realm_hf.evaluation.metrics.OpenQA`]),

plus `id` when the source file has one, and `title` / `gold_passage_id` for SQuAD-open.

Supported files (all paths are arguments; nothing here knows where the data lives):

| format | example files | line layout |
|---|---|---|
| `"jsonl"` | `NQ-open.dev.jsonl`, `NQ-open.efficientqa.*.jsonl`, `topics.dpr.wq.test.txt`, `topics.dpr.curated.test.txt` | `{"question": str, "answer": [str, ...]}` (`"answers"` is accepted too; extra keys are ignored) |
| `"qa_tsv"` | `topics.nq.{test,dev}.txt`, `topics.dpr.nq.*.txt`, `topics.dpr.trivia.test.txt` | `question<TAB>python-list-of-answers`, read like DPR does: `csv.reader(delimiter="\\t")`, then `ast.literal_eval` of the second field (the DPR copies CSV-quote fields containing `"`) |
| `"curated_tsv"` | `large2180-{test,train}.tsv` | `id<TAB>type<TAB>question<TAB>answer_regex` (the regex may itself contain a tab) |
| `"json"` | `brmson_main_*.json` | a JSON array of `{"qId", "qText", "answers"}` |

The format is detected from the content when `file_format` is not given: a `.json` suffix or a leading `[` means a JSON
array, a leading `{` means JSON Lines, and otherwise the number of tab-separated fields on the first line (2 or 4)
picks `"qa_tsv"` or `"curated_tsv"`.

Blank lines and records whose question is empty are skipped; their number and line numbers are logged as one warning
per file. Anything else that cannot be parsed raises [`QADataError`], whose message names the file and the line.
"""

import ast
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import datasets

from ..logging import get_logger
from ..retrieval.corpus import load_rows
from .metrics import warn_invalid_patterns
from .metrics.open_qa.open_qa import ANSWER_TYPES


logger = get_logger(__name__)

FILE_FORMATS = ("jsonl", "json", "qa_tsv", "curated_tsv")

_QUESTION_KEYS = ("question", "qText")
_ANSWER_KEYS = ("answer", "answers")
_ID_KEYS = ("id", "qId")


class QADataError(ValueError):
    """
    Raised when a question file is malformed.

    Args:
        path (`str` or `os.PathLike`):
            The file being read.
        line_number (`int` or `None`):
            1-based line number of the offending record, or `None` for a whole-file problem.
        reason (`str`):
            What is wrong.
    """

    def __init__(self, path: str | PathLike, line_number: int | None, reason: str):
        self.path = str(path)
        self.line_number = line_number
        self.reason = reason
        location = f"{self.path}, line {line_number}" if line_number is not None else self.path
        super().__init__(f"{location}: {reason}")


@dataclass
class _Record:
    line_number: int
    question: str
    answers: list[str]
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _question_features(with_id: bool, extra: dict[str, datasets.Value] | None = None) -> datasets.Features:
    features = {
        "question": datasets.Value("string"),
        "answers": datasets.List(datasets.Value("string")),
        "answer_type": datasets.Value("string"),
    }
    if with_id:
        features["id"] = datasets.Value("string")
    features.update(extra or {})
    return datasets.Features(features)


def _check_file(path: str | PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Question file not found: {path}")
    if not path.is_file():
        raise QADataError(path, None, "is not a regular file")
    return path


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_number = raw[: err.start].count(b"\n") + 1
        raise QADataError(path, line_number, f"not valid UTF-8 ({err.reason} at byte {err.start})") from None


def _split_lines(text: str) -> list[str]:
    # Only "\n" (or "\r\n") ends a record: `str.splitlines` would also split on "\x0c", "\u2028", ... inside fields.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _detect_format(path: Path, text: str) -> str:
    if path.suffix.lower() == ".json":
        return "json"
    for line in _split_lines(text):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("{"):
            return "jsonl"
        if stripped.startswith("["):
            return "json"
        num_fields = len(line.split("\t"))
        if num_fields == 2:
            return "qa_tsv"
        if num_fields >= 4:
            return "curated_tsv"
        raise QADataError(
            path,
            None,
            f"cannot detect the file format: the first record has {num_fields} tab-separated field(s), expected "
            f"JSON Lines, a JSON array, 2 fields (question, answer list) or 4 fields (id, type, question, regex). "
            f"Pass file_format= explicitly (one of {FILE_FORMATS}).",
        )
    raise QADataError(path, None, "the file contains no records")


def _as_answer_list(value: Any, path: Path, line_number: int) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(answer, str) for answer in value):
        return list(value)
    raise QADataError(path, line_number, f"answers must be a string or a list of strings, got {value!r:.200}")


def _record_from_mapping(obj: Any, path: Path, line_number: int) -> _Record:
    if not isinstance(obj, dict):
        raise QADataError(path, line_number, f"expected a JSON object, got {type(obj).__name__}")
    question_key = next((key for key in _QUESTION_KEYS if key in obj), None)
    if question_key is None:
        raise QADataError(path, line_number, f"missing the question field (one of {_QUESTION_KEYS})")
    question = obj[question_key]
    if question is None:
        question = ""
    if not isinstance(question, str):
        raise QADataError(path, line_number, f"the question must be a string, got {type(question).__name__}")
    answer_key = next((key for key in _ANSWER_KEYS if key in obj), None)
    if answer_key is None:
        raise QADataError(path, line_number, f"missing the answer field (one of {_ANSWER_KEYS})")
    answers = _as_answer_list(obj[answer_key], path, line_number)
    id_key = next((key for key in _ID_KEYS if key in obj), None)
    record_id = None if id_key is None or obj[id_key] is None else str(obj[id_key])
    return _Record(line_number=line_number, question=question, answers=answers, id=record_id, extra=obj)


def _iter_jsonl(path: Path, text: str) -> Iterator[_Record | int]:
    for line_number, line in enumerate(_split_lines(text), start=1):
        if not line.strip():
            yield line_number
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise QADataError(path, line_number, f"invalid JSON ({err.msg}, column {err.colno})") from None
        yield _record_from_mapping(obj, path, line_number)


def _iter_json_array(path: Path, text: str) -> Iterator[_Record | int]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise QADataError(path, err.lineno, f"invalid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(data, list):
        raise QADataError(path, 1, f"expected a JSON array of question objects, got {type(data).__name__}")
    # Map each element to its line: json.loads does not keep positions, so re-scan with a raw decoder.
    line_numbers = _json_array_line_numbers(text, len(data))
    for obj, line_number in zip(data, line_numbers):
        yield _record_from_mapping(obj, path, line_number)


def _json_array_line_numbers(text: str, count: int) -> list[int]:
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    line_numbers = []
    for _ in range(count):
        while text[position] in " \t\r\n,":
            position += 1
        line_numbers.append(text.count("\n", 0, position) + 1)
        _, position = decoder.raw_decode(text, position)
    return line_numbers


def _iter_qa_tsv(path: Path, text: str) -> Iterator[_Record | int]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    line_number = 1  # first line of the current row (csv rows may span several lines when quoted)
    for row in reader:
        start_line, line_number = line_number, reader.line_num + 1
        if not row or all(not cell.strip() for cell in row):
            yield start_line
            continue
        if len(row) != 2:
            raise QADataError(
                path, start_line, f"expected 2 tab-separated fields (question, answer list), got {len(row)}"
            )
        question, answers_field = row
        try:
            answers = ast.literal_eval(answers_field.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
            raise QADataError(
                path, start_line, f"the answer field is not a Python list literal ({err.__class__.__name__})"
            ) from None
        if not isinstance(answers, (list, tuple)):
            raise QADataError(path, start_line, f"the answer field must be a list of strings, got {answers!r:.200}")
        yield _Record(line_number=start_line, question=question, answers=_as_answer_list(answers, path, start_line))


def _iter_curated_tsv(path: Path, text: str) -> Iterator[_Record | int]:
    for line_number, line in enumerate(_split_lines(text), start=1):
        if not line.strip():
            yield line_number
            continue
        fields = line.split("\t", 3)  # the answer regex may contain a tab itself
        if len(fields) != 4:
            raise QADataError(
                path,
                line_number,
                f"expected 4 tab-separated fields (id, type, question, answer regex), got {len(fields)}",
            )
        record_id, question_type, question, pattern = fields
        if not pattern.strip():
            raise QADataError(path, line_number, "the answer regex is empty")
        yield _Record(
            line_number=line_number,
            question=question,
            answers=[pattern],
            id=record_id.strip(),
            extra={"question_type": question_type},
        )


_READERS = {
    "jsonl": _iter_jsonl,
    "json": _iter_json_array,
    "qa_tsv": _iter_qa_tsv,
    "curated_tsv": _iter_curated_tsv,
}


def _read_records(path: str | PathLike, file_format: str | None) -> tuple[Path, str, list[_Record]]:
    path = _check_file(path)
    if file_format is not None and file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}.")
    text = _read_text(path)
    file_format = file_format or _detect_format(path, text)
    records: list[_Record] = []
    blank_lines: list[int] = []
    empty_questions: list[int] = []
    for item in _READERS[file_format](path, text):
        if isinstance(item, int):
            blank_lines.append(item)
        elif not item.question.strip():
            empty_questions.append(item.line_number)
        else:
            records.append(item)
    # Blank lines after the last record are just extra newlines at the end of the file: not worth a warning.
    last_line = max([records[-1].line_number if records else 0, *empty_questions])
    skipped = sorted(empty_questions + [number for number in blank_lines if number < last_line])
    if skipped:
        shown = ", ".join(str(number) for number in skipped[:20]) + (", ..." if len(skipped) > 20 else "")
        logger.warning("Skipped %d record(s) with an empty question in %s (line(s) %s).", len(skipped), path, shown)
    if not records:
        raise QADataError(path, None, "the file contains no questions")
    return path, file_format, records


def load_qa_file(path: str | PathLike, answer_type: str = "text", file_format: str | None = None) -> datasets.Dataset:
    """
    Loads any supported open-QA question file (see the module docstring) into a `datasets.Dataset`.

    Args:
        path (`str` or `os.PathLike`):
            The question file.
        answer_type (`str`, *optional*, defaults to `"text"`):
            `"text"` or `"regex"`; stored in the `answer_type` column.
        file_format (`str`, *optional*):
            One of `"jsonl"`, `"json"`, `"qa_tsv"`, `"curated_tsv"`. Detected from the content when not given.

    Returns:
        `datasets.Dataset`: Columns `question`, `answers`, `answer_type`, plus `id` when every record has one.

    Raises:
        `FileNotFoundError`: If `path` does not exist.
        [`QADataError`]: If a record cannot be parsed (the message names the file and line).
    """
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}.")
    path, file_format, records = _read_records(path, file_format)
    if answer_type == "regex":
        warn_invalid_patterns(
            [(f"line {record.line_number}", pattern) for record in records for pattern in record.answers],
            str(path),
        )
    with_id = all(record.id is not None for record in records)
    columns: dict[str, list] = {
        "question": [record.question for record in records],
        "answers": [record.answers for record in records],
        "answer_type": [answer_type] * len(records),
    }
    if with_id:
        columns["id"] = [record.id for record in records]
    logger.info("Loaded %d questions from %s (format %s).", len(records), path, file_format)
    return datasets.Dataset.from_dict(columns, features=_question_features(with_id))


def load_questions(
    path_or_id: str | PathLike,
    split: str = "train",
    question_column: str = "question",
    answers_column: str | None = None,
    gold_doc_ids_column: str | None = None,
) -> datasets.Dataset:
    r"""
    Questions with their answers from a JSON lines, JSON, CSV or Parquet file, a `save_to_disk` directory or a Hub
    dataset id (for example `nq_open`, whose column is `answer`), in the layout the fine-tuning collator and
    [`~realm_hf.evaluation.evaluate_open_qa`] read: `question`, `answers` (`list[str]`, a single answer becoming a
    list of one), and `gold_doc_ids` (`list[int]`) when `gold_doc_ids_column` is given.

    Args:
        path_or_id (`str` or `os.PathLike`): The file, directory or Hub dataset id.
        split (`str`, *optional*, defaults to `"train"`): The split of a Hub dataset or `DatasetDict` directory.
        question_column (`str`, *optional*, defaults to `"question"`): The question column.
        answers_column (`str`, *optional*): The answers column; by default `answers`, else `answer`.
        gold_doc_ids_column (`str`, *optional*): A column of corpus `doc_id`s (one or a list) that answer each
            question, to supervise the retriever with.

    Raises:
        `ValueError`: naming a missing column, or the row whose question or answers are not text.
    """
    rows = load_rows(path_or_id, split)
    columns = rows.column_names
    # Either spelling, row by row: a JSON lines file may mix them.
    answer_columns = [answers_column] if answers_column else [c for c in ("answers", "answer") if c in columns]
    for kind, column in (
        ("question", question_column),
        ("gold", gold_doc_ids_column),
        *(("answers", c) for c in (answer_columns or ["answers"])),
    ):
        if column is not None and column not in columns:
            raise ValueError(f"{path_or_id} has no {column!r} column for the {kind} (it has {columns}).")

    def normalise(row: dict, index: int) -> dict:
        question = row[question_column]
        answers = next((row[c] for c in answer_columns if row[c] is not None), None)
        answers = [answers] if isinstance(answers, str) else answers
        if (
            not isinstance(question, str)
            or not isinstance(answers, list)
            or not all(isinstance(a, str) for a in answers)
        ):
            raise ValueError(
                f"{path_or_id}, row {index}: expected a text question and text answers, got {question!r} / "
                f"{answers!r}."
            )
        out = {"question": question, "answers": answers}
        if gold_doc_ids_column is not None:
            gold = row[gold_doc_ids_column]
            out["gold_doc_ids"] = [int(g) for g in (gold if isinstance(gold, list) else [gold])]
        return out

    features = {"question": datasets.Value("string"), "answers": datasets.Sequence(datasets.Value("string"))}
    if gold_doc_ids_column is not None:
        features["gold_doc_ids"] = datasets.Sequence(datasets.Value("int64"))
    return rows.map(
        normalise, with_indices=True, remove_columns=columns, features=datasets.Features(features),
        desc="Reading questions",
    )  # fmt: skip


def load_nq_open(path: str | PathLike, file_format: str | None = None) -> datasets.Dataset:
    """
    Loads a NaturalQuestions-Open question file.

    REALM's NQ test set is `NQ-open.dev.jsonl` (3,610 questions; also `topics.nq.test.txt` and DPR's re-tokenised
    `topics.dpr.nq.test.txt`); its dev set is the ORQA resplit `topics.nq.dev.txt` (8,757). EfficientQA files load too
    (their extra rating fields are ignored).

    Args:
        path (`str` or `os.PathLike`):
            A JSON Lines file (`{"question", "answer"}`) or a `question<TAB>answer-list` file.
        file_format (`str`, *optional*):
            Forces `"jsonl"` or `"qa_tsv"`; detected when not given.

    Returns:
        `datasets.Dataset`: Columns `question`, `answers`, `answer_type` (`"text"`).
    """
    return load_qa_file(path, answer_type="text", file_format=file_format)


def load_webquestions(path: str | PathLike, file_format: str | None = None) -> datasets.Dataset:
    """
    Loads a WebQuestions question file.

    REALM's WebQuestions test set (2,032 questions) is DPR's `topics.dpr.wq.test.txt` (JSON Lines) or, with stable
    ids, `brmson_main_test.json` (a JSON array of `{"qId", "qText", "answers"}`). The train questions are the
    `brmson_main_{trainmodel,val,devtest}.json` files.

    Args:
        path (`str` or `os.PathLike`):
            The question file.
        file_format (`str`, *optional*):
            Forces `"jsonl"` or `"json"`; detected when not given.

    Returns:
        `datasets.Dataset`: Columns `question`, `answers`, `answer_type` (`"text"`), plus `id` for the brmson files.
    """
    return load_qa_file(path, answer_type="text", file_format=file_format)


def load_curatedtrec(path: str | PathLike, file_format: str | None = None) -> datasets.Dataset:
    """
    Loads a CuratedTREC question file, whose answers are regular expressions.

    REALM's CuratedTREC test set (694 questions) is `large2180-test.tsv` (`id<TAB>type<TAB>question<TAB>regex`) or
    DPR's `topics.dpr.curated.test.txt` (JSON Lines with a one-regex answer list). Score predictions with
    `OpenQA(config_name="regex")` (or `answer_type="regex"`), which applies `re.match` case-insensitively.

    Args:
        path (`str` or `os.PathLike`):
            The question file.
        file_format (`str`, *optional*):
            Forces `"curated_tsv"` or `"jsonl"`; detected when not given.

    Returns:
        `datasets.Dataset`: Columns `question`, `answers` (regular expressions), `answer_type` (`"regex"`), plus `id`
        for the TSV files.
    """
    return load_qa_file(path, answer_type="regex", file_format=file_format)


def load_squad_open(
    passages_path: str | PathLike, qa_path: str | PathLike
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """
    Loads the SQuAD-open test bed: a passage corpus and questions linked to their gold passage.

    Args:
        passages_path (`str` or `os.PathLike`):
            JSON Lines of `{"id", "title", "text"}` (for example `squad_v1.1_dev_passages.jsonl`, 2,067 passages).
        qa_path (`str` or `os.PathLike`):
            JSON Lines of `{"id", "question", "answers", "title", "passage_id"}` (for example
            `squad_v1.1_dev_qa.train.jsonl`, 6,382 questions, or `squad_v1.1_dev_qa.dev.jsonl`, 1,656).

    Returns:
        `tuple[datasets.Dataset, datasets.Dataset]`: The passages (columns `passage_id`, `title`, `text`, in file
        order) and the questions (columns `question`, `answers`, `answer_type` (`"text"`), `id`, `title`,
        `gold_passage_id`).

    Raises:
        `FileNotFoundError`: If a file does not exist.
        [`QADataError`]: On a malformed record, a duplicate passage id, or a question whose gold passage is not in
        the passage file.
    """
    passages_path = _check_file(passages_path)
    passage_columns: dict[str, list[str]] = {"passage_id": [], "title": [], "text": []}
    seen: dict[str, int] = {}  # passage id -> line number
    index_of: dict[str, int] = {}  # passage id -> row in the passage dataset
    for line_number, line in enumerate(_split_lines(_read_text(passages_path)), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise QADataError(passages_path, line_number, f"invalid JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(obj, dict):
            raise QADataError(passages_path, line_number, f"expected a JSON object, got {type(obj).__name__}")
        for key in ("id", "title", "text"):
            if not isinstance(obj.get(key), str):
                raise QADataError(passages_path, line_number, f"field {key!r} is missing or not a string")
        passage_id = obj["id"]
        if passage_id in seen:
            raise QADataError(
                passages_path, line_number, f"duplicate passage id {passage_id!r} (first on line {seen[passage_id]})"
            )
        seen[passage_id] = line_number
        index_of[passage_id] = len(passage_columns["passage_id"])
        passage_columns["passage_id"].append(passage_id)
        passage_columns["title"].append(obj["title"])
        passage_columns["text"].append(obj["text"])
    if not seen:
        raise QADataError(passages_path, None, "the file contains no passages")

    qa_path, _, records = _read_records(qa_path, "jsonl")
    titles, gold_ids = [], []
    for record in records:
        gold_id = record.extra.get("passage_id")
        if not isinstance(gold_id, str):
            raise QADataError(qa_path, record.line_number, "field 'passage_id' is missing or not a string")
        if gold_id not in seen:
            raise QADataError(
                qa_path, record.line_number, f"gold passage {gold_id!r} is not in the passage file {passages_path}"
            )
        if record.id is None:
            raise QADataError(qa_path, record.line_number, "field 'id' is missing")
        gold_ids.append(gold_id)
        titles.append(str(record.extra.get("title") or passage_columns["title"][index_of[gold_id]]))

    passages = datasets.Dataset.from_dict(
        passage_columns,
        features=datasets.Features(
            {
                "passage_id": datasets.Value("string"),
                "title": datasets.Value("string"),
                "text": datasets.Value("string"),
            }
        ),
    )
    questions = datasets.Dataset.from_dict(
        {
            "question": [record.question for record in records],
            "answers": [record.answers for record in records],
            "answer_type": ["text"] * len(records),
            "id": [record.id for record in records],
            "title": titles,
            "gold_passage_id": gold_ids,
        },
        features=_question_features(
            with_id=True, extra={"title": datasets.Value("string"), "gold_passage_id": datasets.Value("string")}
        ),
    )
    logger.info(
        "Loaded %d passages from %s and %d questions from %s.", len(passages), passages_path, len(questions), qa_path
    )
    return passages, questions


def gold_doc_ids(questions, passages) -> list[int]:
    """The `doc_id` of each question's gold passage (its row in `passages`, as
    [`~realm_hf.retrieval.corpus.split_documents_into_blocks`] numbers documents), from the `gold_passage_id` column that
    [`load_squad_open`] writes.

    Raises:
        `ValueError`: If a gold passage is not among `passages`.
    """
    row_of = {passage_id: row for row, passage_id in enumerate(passages["passage_id"])}
    missing = sorted({p for p in questions["gold_passage_id"] if p not in row_of})
    if missing:
        raise ValueError(f"{len(missing)} gold passages are not among the passages, for example {missing[:3]}.")
    return [row_of[p] for p in questions["gold_passage_id"]]


__all__ = [
    "ANSWER_TYPES",
    "FILE_FORMATS",
    "QADataError",
    "gold_doc_ids",
    "load_curatedtrec",
    "load_nq_open",
    "load_qa_file",
    "load_questions",
    "load_squad_open",
    "load_webquestions",
]
