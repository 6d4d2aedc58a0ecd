"""Salient spans for REALM pre-training, tagged once over the corpus.

REALM (Guu et al. 2020, §3.4) masks *salient spans* (named entities and dates) instead of random tokens: the query of
a pre-training example is a single sentence in which exactly one salient span is replaced by `[MASK]` tokens. The
released code reads spans that were tagged offline (a BERT tagger trained on CoNLL-2003 plus a date regex; the tagger
was not released). This module does the offline part:

- a *tagger* ([`~realm_hf.training.taggers`]) maps texts to character spans `(start, end, label)`:
  [`RuleBasedTagger`] needs no model, [`SpacyTagger`] wraps spaCy and [`TransformersNERTagger`] wraps a
  `transformers` token-classification pipeline;
- [`~realm_hf.retrieval.corpus.split_sentences`] is the small regex sentence splitter (shared with block packing);
- [`tag_salient_spans`] runs both over a `datasets.Dataset` with `Dataset.map` (once, never per training step) and
  emits one row per sentence with its wordpiece ids and the salient spans as wordpiece index ranges. The masking
  itself happens in [`~realm_hf.training.collators.DataCollatorForRealmPreTraining`].
"""

import bisect
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
from transformers.utils import logging

from ..logging import get_logger
from ..retrieval.corpus import as_text, split_sentences
from .taggers import CharSpan, RuleBasedTagger, SalientSpanTagger


logger = get_logger(__name__)


def salient_span_features() -> datasets.Features:
    """The `datasets.Features` of the output of [`tag_salient_spans`].

    Returns:
        `datasets.Features`: `doc_id` (int64), `sentence` (string), `token_ids` (list of int32), `salient_spans`
        (list of `[start, end)` int32 pairs) and `salient_labels` (list of strings, one per span).
    """
    return datasets.Features(
        {
            "doc_id": datasets.Value("int64"),
            "sentence": datasets.Value("string"),
            "token_ids": datasets.List(datasets.Value("int32")),
            "salient_spans": datasets.List(datasets.List(datasets.Value("int32"), length=2)),
            "salient_labels": datasets.List(datasets.Value("string")),
        }
    )


def tag_salient_spans(
    dataset: datasets.Dataset,
    tokenizer: Any,
    tagger: SalientSpanTagger | None = None,
    text_column: str = "text",
    num_proc: int | None = None,
    batch_size: int = 256,
    doc_id_column: str = "doc_id",
    keep_in_memory: bool = False,
    desc: str | None = "Tagging salient spans",
) -> datasets.Dataset:
    """Split a corpus into sentences and tag their salient spans, once, with `Dataset.map`.

    Every text is tagged as a whole (so the tagger sees the context), split with [`split_sentences`], and every
    sentence becomes one row. Spans that cross a sentence boundary are dropped, as in REALM. Each sentence is
    tokenized with the fast tokenizer (special-token strings such as a literal `"[MASK]"` in the text are tokenized
    as text), and a tagged character span becomes the `[start, end)` range of the wordpieces whose character range
    overlaps it. Spans that cover no wordpiece are dropped and overlapping wordpiece spans are merged. Sentences
    without wordpieces are dropped; sentences without salient spans are kept (the collator decides what to do with
    them).

    Args:
        dataset (`datasets.Dataset`):
            Documents (or evidence blocks) with a `text_column` of strings and optionally an integer `doc_id_column`.
            Other columns are dropped.
        tokenizer ([`PreTrainedTokenizerBase`]):
            A fast (Rust-backed) BERT-style tokenizer, such as [`RealmTokenizerFast`]; offsets mappings are needed.
        tagger (`Callable[[list[str]], list[list[tuple[int, int, str]]]]`, *optional*):
            The salient span tagger; a [`RuleBasedTagger`] by default.
        text_column (`str`, *optional*, defaults to `"text"`):
            Name of the text column.
        num_proc (`int`, *optional*):
            Number of processes for `Dataset.map`.
        batch_size (`int`, *optional*, defaults to 256):
            Documents per `Dataset.map` batch (and per tagger call).
        doc_id_column (`str`, *optional*, defaults to `"doc_id"`):
            Column of document ids; without it the row index is the document id.
        keep_in_memory (`bool`, *optional*, defaults to `False`):
            Passed to `Dataset.map`.
        desc (`str`, *optional*):
            Progress-bar description for `Dataset.map`.

    Returns:
        `datasets.Dataset` with the features of [`salient_span_features`]: one row per sentence, with `doc_id`,
        `sentence`, `token_ids` (wordpieces without special tokens), `salient_spans` (sorted, non-overlapping
        `[start, end)` wordpiece ranges inside `[0, len(token_ids))`) and `salient_labels`.

    Example:

    ```python
    >>> sentences = tag_salient_spans(documents, tokenizer)
    >>> collator = DataCollatorForRealmPreTraining(tokenizer, masking="salient_span")
    >>> batch = collator([sentences[i] for i in range(8)])
    ```
    """
    if isinstance(dataset, datasets.DatasetDict):
        raise ValueError(f"Expected a `datasets.Dataset`, got a `DatasetDict` with splits {list(dataset)}; pick one.")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("`tokenizer` must be a fast (Rust-backed) tokenizer: offsets mappings are needed.")
    if text_column not in dataset.column_names:
        raise ValueError(f"Column {text_column!r} is missing; the dataset has columns {dataset.column_names}.")
    has_doc_id = doc_id_column in dataset.column_names
    tagged = dataset.map(
        _tag_batch,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        features=salient_span_features(),
        keep_in_memory=keep_in_memory,
        desc=desc,
        fn_kwargs={
            "tokenizer": tokenizer,
            "tagger": RuleBasedTagger() if tagger is None else tagger,
            "text_column": text_column,
            "doc_id_column": doc_id_column if has_doc_id else None,
        },
    )
    if logger.isEnabledFor(logging.INFO):
        num_spans = pc.list_value_length(tagged.data.column("salient_spans"))
        with_spans = pc.sum(pc.greater(num_spans, 0)).as_py() or 0
        logger.info(
            "Tagged %d documents into %d sentences, %d of them with at least one salient span.",
            len(dataset),
            len(tagged),
            with_spans,
        )
    return tagged


def _tag_batch(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: Any,
    tagger: SalientSpanTagger,
    text_column: str,
    doc_id_column: str | None,
) -> dict[str, list]:
    """`Dataset.map` function: a batch of documents -> a batch of sentences with salient spans."""
    texts = [as_text(value, text_column, row) for value, row in zip(batch[text_column], indices)]
    doc_ids = batch[doc_id_column] if doc_id_column is not None else indices
    tagged = tagger(texts)
    if len(tagged) != len(texts):
        raise ValueError(f"The tagger returned spans for {len(tagged)} texts, expected {len(texts)}.")

    sentence_doc: list[int] = []
    sentence_text: list[str] = []
    sentence_spans: list[list[CharSpan]] = []  # relative to the sentence
    for i, (text, spans) in enumerate(zip(texts, tagged)):
        sentences = split_sentences(text)
        starts = [start for start, _ in sentences]
        per_sentence: list[list[CharSpan]] = [[] for _ in sentences]
        for start, end, label in spans:
            start, end = max(int(start), 0), min(int(end), len(text))
            k = bisect.bisect_right(starts, start) - 1
            if end <= start or k < 0 or end > sentences[k][1]:
                continue  # empty, or not inside one sentence
            per_sentence[k].append((start - starts[k], end - starts[k], str(label)))
        for (start, end), sentence_char_spans in zip(sentences, per_sentence):
            sentence_doc.append(int(doc_ids[i]))
            sentence_text.append(text[start:end])
            sentence_spans.append(sentence_char_spans)

    out: dict[str, list] = {k: [] for k in ("doc_id", "sentence", "token_ids", "salient_spans", "salient_labels")}
    if not sentence_text:
        return out
    encoding = tokenizer(
        sentence_text,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        split_special_tokens=True,
        verbose=False,
    )
    for j, text in enumerate(sentence_text):
        ids = encoding["input_ids"][j]
        if len(ids) == 0:
            continue
        offsets = np.asarray(encoding["offset_mapping"][j], dtype=np.int64).reshape(-1, 2)
        token_spans, labels = char_spans_to_token_spans(sentence_spans[j], offsets)
        out["doc_id"].append(sentence_doc[j])
        out["sentence"].append(text)
        out["token_ids"].append(np.asarray(ids, dtype=np.int32))
        out["salient_spans"].append(token_spans)
        out["salient_labels"].append(labels)
    return out


def char_spans_to_token_spans(spans: Sequence[CharSpan], offsets: np.ndarray) -> tuple[list[list[int]], list[str]]:
    """Map character spans to wordpiece index ranges.

    A wordpiece belongs to a span when its character range overlaps it; the span becomes `[first, last + 1)` over the
    wordpieces that do. Spans that cover no wordpiece are dropped; overlapping results are merged (keeping the label
    of the first).

    Args:
        spans (`Sequence[tuple[int, int, str]]`):
            Character spans `(start, end, label)`.
        offsets (`np.ndarray` of shape `(num_tokens, 2)`):
            Character offsets of the wordpieces (an offsets mapping of a fast tokenizer, without special tokens).

    Returns:
        `tuple[list[list[int]], list[str]]`: the sorted, non-overlapping `[start, end)` wordpiece ranges and their
        labels.
    """
    if len(spans) == 0 or len(offsets) == 0:
        return [], []
    token_starts, token_ends = offsets[:, 0], offsets[:, 1]
    monotonic = bool(np.all(np.diff(token_starts) >= 0) and np.all(np.diff(token_ends) >= 0))
    ranges = []
    for start, end, label in spans:
        if monotonic:
            first = int(np.searchsorted(token_ends, start, side="right"))
            last = int(np.searchsorted(token_starts, end, side="left")) - 1
        else:
            hits = np.flatnonzero((token_starts < end) & (token_ends > start))
            first, last = (int(hits[0]), int(hits[-1])) if len(hits) else (1, 0)
        if first <= last:
            ranges.append((first, last + 1, label))
    ranges.sort()
    merged: list[list[int]] = []
    labels: list[str] = []
    for start, end, label in ranges:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            continue
        merged.append([start, end])
        labels.append(label)
    return merged, labels
