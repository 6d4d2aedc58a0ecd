"""Knowledge-corpus preparation: documents -> REALM evidence blocks.

REALM (Guu et al. 2020, §4.3) and ORQA split Wikipedia into *evidence blocks* of at most 288 BERT wordpieces,
counting the retriever input `[CLS] title [SEP] block [SEP]`: the sentences of a document are packed greedily into
a block while `3 + len(title) + len(block) <= 288`. This module does the same with any `datasets.Dataset` of
documents and any fast BERT-style tokenizer, and stores the wordpiece ids of every block so that nothing downstream
ever re-tokenizes block text (re-tokenizing a decoded block is not guaranteed to give the same ids).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ..logging import get_logger


logger = get_logger(__name__)

#: Number of special tokens around a block in the retriever input `[CLS] title [SEP] block [SEP]`.
NUM_BLOCK_SPECIAL_TOKENS = 3


_STRING_DTYPES = ("string", "large_string")
_BINARY_DTYPES = ("binary", "large_binary")


def block_output_features() -> datasets.Features:
    """The `datasets.Features` of a corpus of evidence blocks.

    Returns:
        `datasets.Features`: `title` (string), `text` (string), `doc_id` (int64), `title_token_ids` and `token_ids`
        (lists of int32 wordpiece ids, without special tokens).
    """
    return datasets.Features(
        {
            "title": datasets.Value("string"),
            "text": datasets.Value("string"),
            "doc_id": datasets.Value("int64"),
            "title_token_ids": datasets.List(datasets.Value("int32")),
            "token_ids": datasets.List(datasets.Value("int32")),
        }
    )


# A sentence ends after `.`, `!` or `?` (possibly repeated and followed by closing quotes or brackets) when
# whitespace or the end of the text follows, after CJK full stops, and at every line break.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019\u00bb)\]]*(?=\s|$)|[\u3002\uff01\uff1f]+|\n")
# A single `.` after one of these words (or after a single letter, as in "J. R. R. Tolkien" or "e.g.") does not end
# a sentence.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs fig inc ltd corp gen col lt sgt capt rev hon mt".split()
)  # fmt: skip


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Split a text into sentences with a simple regex (no NLTK).

    A sentence ends after `.`, `!` or `?` (repeats and closing quotes/brackets included) followed by whitespace or
    the end of the text, after a CJK full stop (`。！？`), and at every line break. A single `.` after a single letter
    (initials, "e.g.") or after a common title/abbreviation ("Mr.", "Dr.", "St.", "Inc.", ...) does not end a
    sentence. Leading and trailing whitespace is excluded from every sentence and empty sentences are dropped.

    Args:
        text (`str`):
            The text to split.

    Returns:
        `list[tuple[int, int]]`: sorted, non-overlapping, non-empty character spans `(start, end)`;
        `text[start:end]` is a sentence without surrounding whitespace.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if _is_abbreviation(text, match):
            continue
        _append_stripped(spans, text, start, match.end())
        start = match.end()
    _append_stripped(spans, text, start, len(text))
    return spans


def _is_abbreviation(text: str, match: re.Match) -> bool:
    if match.group() != ".":
        return False
    end = match.start()
    begin = end
    while begin > 0 and text[begin - 1].isalpha():
        begin -= 1
    word = text[begin:end]
    return len(word) == 1 or word.lower() in ABBREVIATIONS


def _append_stripped(spans: list[tuple[int, int]], text: str, start: int, end: int) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        spans.append((start, end))


def sentence_boundaries(text: str) -> np.ndarray:
    """Character offsets where a new sentence starts ([`split_sentences`]; used for block packing).

    Args:
        text (`str`):
            The document text.

    Returns:
        `np.ndarray` of int64: sorted start offsets of every sentence after the first one.
    """
    return np.fromiter((start for start, _ in split_sentences(text)[1:]), dtype=np.int64)


_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_rows(path_or_id: str | os.PathLike, split: str = "train") -> datasets.Dataset:
    """The rows of a JSON lines, JSON, CSV or Parquet file, of a directory written by `Dataset.save_to_disk`, or of a
    Hub dataset id (its `split`; also the split of a `DatasetDict` directory).

    Raises:
        `ValueError`: naming the unknown file type or the missing split.
    """
    path = Path(os.fspath(path_or_id)).expanduser()
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"{path}: unknown document file type {path.suffix!r}; expected one of {sorted(_FILE_BUILDERS)}."
            )
        rows = datasets.load_dataset(builder, data_files=str(path), split="train")
    elif path.is_dir():
        rows = datasets.load_from_disk(str(path))
    else:
        rows = datasets.load_dataset(os.fspath(path_or_id), split=split)
    if isinstance(rows, datasets.DatasetDict):
        if split not in rows:
            raise ValueError(f"{path_or_id} has no split {split!r} (it has {sorted(rows)}).")
        rows = rows[split]
    return rows


def load_documents(
    path_or_id: str | os.PathLike, split: str = "train", text_column: str = "text", title_column: str = "title"
) -> datasets.Dataset:
    """Documents to build a corpus from, wherever they are ([`load_rows`]): a JSON lines, JSON, CSV or Parquet file,
    a directory written by `Dataset.save_to_disk`, or a Hub dataset id.

    Args:
        path_or_id (`str` or `os.PathLike`):
            The file, the directory or the Hub dataset id.
        split (`str`, *optional*, defaults to `"train"`):
            The split of a Hub dataset or of a `DatasetDict` directory.
        text_column (`str`, *optional*, defaults to `"text"`):
            The column with the documents' text (required).
        title_column (`str`, *optional*, defaults to `"title"`):
            The column with their titles (optional).

    Returns:
        `datasets.Dataset`: the documents, with at least `text_column`.

    Raises:
        `ValueError`: naming the file type, the missing split or the missing text column.
    """
    documents = load_rows(path_or_id, split)
    if text_column not in documents.column_names:
        raise ValueError(
            f"{path_or_id} has no {text_column!r} column (it has {documents.column_names}); the documents need a "
            f"text column{' and optionally ' + repr(title_column) if title_column else ''}."
        )
    return documents


def split_documents_into_blocks(
    dataset: datasets.Dataset,
    tokenizer: Any,
    max_block_length: int = 288,
    num_proc: int | None = None,
    batch_size: int = 1000,
    title_column: str = "title",
    text_column: str = "text",
    doc_id_column: str = "doc_id",
    keep_in_memory: bool = False,
    desc: str | None = "Splitting documents into blocks",
) -> datasets.Dataset:
    """Split documents into REALM evidence blocks of at most `max_block_length` wordpieces.

    Every document's text is tokenized once (with offsets), split into sentences with a simple regex splitter, and
    the sentences are packed greedily into a block while `3 + len(title_ids) + len(block_ids) <= max_block_length`
    (the retriever input is `[CLS] title [SEP] block [SEP]`). A sentence longer than the whole budget is cut into
    pieces, at word boundaries where possible. Titles longer than half of the budget are truncated (both the stored
    title string and its ids).

    The `text` of a block is the exact substring of the document its `token_ids` came from; the ids are stored so
    nothing downstream has to re-tokenize.

    Args:
        dataset (`datasets.Dataset`):
            Documents with a `title` and a `text` column (string, or UTF-8 bytes which are decoded) and optionally a
            `doc_id` integer column; without it the row index is the document id. Other columns are dropped.
        tokenizer ([`PreTrainedTokenizerBase`]):
            A fast (Rust-backed) BERT-style tokenizer; offsets mappings are needed.
        max_block_length (`int`, *optional*, defaults to 288):
            Maximum length of `[CLS] title [SEP] block [SEP]` in wordpieces (REALM uses 288).
        num_proc (`int`, *optional*):
            Number of processes for `Dataset.map`.
        batch_size (`int`, *optional*, defaults to 1000):
            Documents per `Dataset.map` batch.
        title_column (`str`, *optional*, defaults to `"title"`):
            Name of the title column.
        text_column (`str`, *optional*, defaults to `"text"`):
            Name of the text column.
        doc_id_column (`str`, *optional*, defaults to `"doc_id"`):
            Name of the optional document-id column.
        keep_in_memory (`bool`, *optional*, defaults to `False`):
            Passed to `Dataset.map`.
        desc (`str`, *optional*):
            Progress-bar description for `Dataset.map`.

    Returns:
        `datasets.Dataset`: one row per block (row index = block id) with the columns of
        [`block_output_features`]: `title`, `text`, `doc_id`, `title_token_ids`, `token_ids`.

    Raises:
        `ValueError`: if the corpus is empty, a column is missing or does not hold strings, a text is not valid UTF-8,
        or every document is empty. Empty documents are skipped with a warning.
    """
    _check_documents(dataset, tokenizer, max_block_length, title_column, text_column, doc_id_column)
    has_doc_id = doc_id_column in dataset.column_names
    features = block_output_features()
    features["_source_row"] = datasets.Value("int64")
    blocks = dataset.map(
        _split_batch,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        features=features,
        keep_in_memory=keep_in_memory,
        desc=desc,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_block_length": max_block_length,
            "title_column": title_column,
            "text_column": text_column,
            "doc_id_column": doc_id_column if has_doc_id else None,
        },
    )
    num_docs = len(dataset)
    source_rows = blocks.with_format("numpy", columns=["_source_row"])[:]["_source_row"]
    num_nonempty = _count_distinct_sorted(source_rows)
    if num_nonempty == 0:
        raise ValueError(f"Every one of the {num_docs} documents is empty (no wordpieces in column {text_column!r}).")
    if num_nonempty < num_docs:
        logger.warning("Skipped %d empty documents out of %d.", num_docs - num_nonempty, num_docs)
    blocks = blocks.remove_columns("_source_row")
    logger.info("Split %d documents into %d blocks (max_block_length=%d).", num_docs, len(blocks), max_block_length)
    return blocks


def tokenize_blocks(
    dataset: datasets.Dataset,
    tokenizer: Any,
    num_proc: int | None = None,
    batch_size: int = 1000,
    title_column: str | None = "title",
    text_column: str = "text",
    keep_in_memory: bool = False,
) -> datasets.Dataset:
    """Add `title_token_ids` and `token_ids` to a dataset whose rows already are evidence blocks.

    Use this for corpora that were split elsewhere (for example the legacy REALM `block_records.npy`). Blocks are not
    split or truncated.

    Args:
        dataset (`datasets.Dataset`):
            One block per row, with a `text_column` of strings and optionally a `title_column`.
        tokenizer ([`PreTrainedTokenizerBase`]):
            A BERT-style tokenizer.
        num_proc (`int`, *optional*):
            Number of processes for `Dataset.map`.
        batch_size (`int`, *optional*, defaults to 1000):
            Rows per `Dataset.map` batch.
        title_column (`str`, *optional*, defaults to `"title"`):
            Title column; if `None` or absent, titles are empty.
        text_column (`str`, *optional*, defaults to `"text"`):
            Text column.
        keep_in_memory (`bool`, *optional*, defaults to `False`):
            Passed to `Dataset.map`.

    Returns:
        `datasets.Dataset`: the input with `title_token_ids` and `token_ids` (int32 lists) added or replaced.
    """
    if text_column not in dataset.column_names:
        raise ValueError(f"Column {text_column!r} is missing; the dataset has columns {dataset.column_names}.")
    use_title = title_column is not None and title_column in dataset.column_names
    features = dataset.features.copy()
    features["title_token_ids"] = datasets.List(datasets.Value("int32"))
    features["token_ids"] = datasets.List(datasets.Value("int32"))

    def _tokenize(batch: dict[str, list]) -> dict[str, list]:
        texts = batch[text_column]
        titles = batch[title_column] if use_title else [""] * len(texts)
        enc_kwargs = {"add_special_tokens": False, "verbose": False}
        batch["token_ids"] = [np.asarray(ids, dtype=np.int32) for ids in tokenizer(texts, **enc_kwargs)["input_ids"]]
        batch["title_token_ids"] = [
            np.asarray(ids, dtype=np.int32) for ids in tokenizer(titles, **enc_kwargs)["input_ids"]
        ]
        return batch

    return dataset.map(
        _tokenize,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        features=features,
        keep_in_memory=keep_in_memory,
        desc="Tokenizing blocks",
    )


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------


def _check_documents(
    dataset: Any,
    tokenizer: Any,
    max_block_length: int,
    title_column: str,
    text_column: str,
    doc_id_column: str,
) -> None:
    if isinstance(dataset, datasets.DatasetDict):
        raise ValueError(f"Expected a `datasets.Dataset`, got a `DatasetDict` with splits {list(dataset)}; pick one.")
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"Expected a `datasets.Dataset`, got {type(dataset).__name__}.")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("`tokenizer` must be a fast (Rust-backed) tokenizer: offsets mappings are needed.")
    if not isinstance(max_block_length, int) or max_block_length < NUM_BLOCK_SPECIAL_TOKENS + 1:
        raise ValueError(
            f"`max_block_length` must be an int >= {NUM_BLOCK_SPECIAL_TOKENS + 1}, got {max_block_length}."
        )
    missing = [c for c in (title_column, text_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"The corpus is missing column(s) {missing}; it has columns {dataset.column_names}.")
    if len(dataset) == 0:
        raise ValueError("The corpus is empty (0 documents).")
    for column in (title_column, text_column):
        feature = dataset.features[column]
        dtype = getattr(feature, "dtype", None)
        if not isinstance(feature, datasets.Value) or dtype not in _STRING_DTYPES + _BINARY_DTYPES:
            raise ValueError(f"Column {column!r} must contain strings, but its feature type is {feature}.")
    if doc_id_column in dataset.column_names:
        feature = dataset.features[doc_id_column]
        if not isinstance(feature, datasets.Value) or not feature.dtype.startswith(("int", "uint")):
            raise ValueError(f"Column {doc_id_column!r} must contain integers, but its feature type is {feature}.")


def as_text(value: Any, column: str, row: int) -> str:
    """Return `value` as `str`, decoding UTF-8 bytes; raise a `ValueError` naming the row otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"Document {row}: column {column!r} holds bytes that are not valid UTF-8 ({err}). "
                "Decode the corpus to `str` with the right encoding first."
            ) from err
    if value is None:
        raise ValueError(f"Document {row}: column {column!r} is missing (None); expected a string.")
    raise ValueError(f"Document {row}: column {column!r} must be a string, got {type(value).__name__}.")


def _count_distinct_sorted(values: np.ndarray) -> int:
    """Number of distinct values of a sorted 1-D array."""
    if len(values) == 0:
        return 0
    return int(np.count_nonzero(np.diff(values))) + 1


# ----------------------------------------------------------------------------------------------------------------
# Splitting and packing
# ----------------------------------------------------------------------------------------------------------------


def _split_batch(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: Any,
    max_block_length: int,
    title_column: str,
    text_column: str,
    doc_id_column: str | None,
) -> dict[str, list]:
    """`Dataset.map` function: a batch of documents -> a batch of blocks."""
    titles = ["" if t is None else as_text(t, title_column, r) for t, r in zip(batch[title_column], indices)]
    texts = [as_text(t, text_column, r) for t, r in zip(batch[text_column], indices)]
    doc_ids = batch[doc_id_column] if doc_id_column is not None else indices
    enc_kwargs = {"add_special_tokens": False, "return_offsets_mapping": True, "verbose": False}
    title_enc = tokenizer(titles, **enc_kwargs)
    text_enc = tokenizer(texts, **enc_kwargs)
    max_title_length = (max_block_length - NUM_BLOCK_SPECIAL_TOKENS) // 2

    out: dict[str, list] = {k: [] for k in ("title", "text", "doc_id", "title_token_ids", "token_ids", "_source_row")}
    for i, (title, text) in enumerate(zip(titles, texts)):
        title, title_ids = _truncate_title(
            title, title_enc["input_ids"][i], title_enc["offset_mapping"][i], max_title_length
        )
        budget = max_block_length - NUM_BLOCK_SPECIAL_TOKENS - len(title_ids)
        ids = np.asarray(text_enc["input_ids"][i], dtype=np.int32)
        if len(ids) == 0:
            continue
        offsets = np.asarray(text_enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
        word_starts = _word_starts(text_enc.word_ids(i))
        for start, end in _pack_blocks(_sentence_spans(text, offsets), word_starts, budget):
            out["title"].append(title)
            out["text"].append(text[offsets[start, 0] : offsets[end - 1, 1]])
            out["doc_id"].append(int(doc_ids[i]))
            out["title_token_ids"].append(title_ids)
            out["token_ids"].append(ids[start:end])
            out["_source_row"].append(indices[i])
    return out


def _truncate_title(
    title: str, ids: Sequence[int], offsets: Sequence[tuple[int, int]], max_length: int
) -> tuple[str, np.ndarray]:
    """Keep at most `max_length` title wordpieces (and the matching prefix of the title string)."""
    title_ids = np.asarray(ids, dtype=np.int32)
    if len(title_ids) <= max_length:
        return title, title_ids
    logger.debug("Truncating a title of %d wordpieces to %d.", len(title_ids), max_length)
    end = offsets[max_length - 1][1] if max_length > 0 else 0
    return title[:end], title_ids[:max_length]


def _word_starts(word_ids: Sequence[int | None]) -> np.ndarray:
    """Boolean mask: does token `i` start a new word (so a block may be cut before it)?"""
    words = np.asarray([-1 if w is None else w for w in word_ids], dtype=np.int64)
    starts = np.ones(len(words), dtype=bool)
    starts[1:] = words[1:] != words[:-1]
    return starts


def _sentence_spans(text: str, offsets: np.ndarray) -> list[tuple[int, int]]:
    """Token-index spans `[start, end)` of the sentences of `text` (a token belongs to the sentence of its start)."""
    sentence_of_token = np.searchsorted(sentence_boundaries(text), offsets[:, 0], side="right")
    change = np.flatnonzero(np.diff(sentence_of_token)) + 1
    edges = np.concatenate([[0], change, [len(offsets)]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _pack_blocks(sentences: list[tuple[int, int]], word_starts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Greedily pack consecutive sentence spans into blocks of at most `budget` tokens.

    A sentence longer than `budget` ends the current block and is cut into pieces (see [`_cut_long_span`]); its
    last piece starts the next block.
    """
    blocks: list[tuple[int, int]] = []
    block_start = block_end = sentences[0][0]
    for start, end in sentences:
        if end - block_start <= budget:
            block_end = end
            continue
        if block_end > block_start:
            blocks.append((block_start, block_end))
        pieces = _cut_long_span(start, end, word_starts, budget)
        blocks.extend(pieces[:-1])
        block_start, block_end = pieces[-1]
    if block_end > block_start:
        blocks.append((block_start, block_end))
    return blocks


def _cut_long_span(start: int, end: int, word_starts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Cut `[start, end)` into pieces of at most `budget` tokens, preferring cuts before a word's first token."""
    pieces = []
    while end - start > budget:
        cut = start + budget
        candidates = np.flatnonzero(word_starts[start + 1 : cut + 1])
        if len(candidates) > 0:
            cut = start + 1 + int(candidates[-1])
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces
