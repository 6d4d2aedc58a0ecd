"""Salient spans for REALM pre-training, tagged once over the corpus.

REALM (Guu et al. 2020, §3.4) masks *salient spans* (named entities and dates) instead of random tokens: the query of
a pre-training example is a single sentence in which exactly one salient span is replaced by `[MASK]` tokens. The
released code reads spans that were tagged offline (a BERT tagger trained on CoNLL-2003 plus a date regex; the tagger
was not released). This module does the offline part:

- a *tagger* maps texts to character spans `(start, end, label)`: [`RuleBasedTagger`] needs no model,
  [`SpacyTagger`] wraps spaCy and [`TransformersNERTagger`] wraps a `transformers` token-classification pipeline;
- [`~realm_hf.retrieval.corpus.split_sentences`] is the small regex sentence splitter (shared with block packing);
- [`tag_salient_spans`] runs both over a `datasets.Dataset` with `Dataset.map` (once, never per training step) and
  emits one row per sentence with its wordpiece ids and the salient spans as wordpiece index ranges. The masking
  itself happens in [`~realm_hf.training.collators.DataCollatorForRealmPreTraining`].
"""

import bisect
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import datasets
import numpy as np
import pyarrow.compute as pc
from transformers import Pipeline, pipeline
from transformers.utils import logging

from ..retrieval.corpus import ABBREVIATIONS, as_text, split_sentences


logger = logging.get_logger(__name__)

#: A tagged character span: `(start, end, label)` with `text[start:end]` the span.
CharSpan = tuple[int, int, str]


class SalientSpanTagger(Protocol):
    """Anything that tags salient character spans: `tagger(texts) -> spans`.

    A tagger receives a list of texts and returns, for every text, a list of `(start, end, label)` character spans
    (`text[start:end]` is the span). Spans may overlap or be unsorted; [`tag_salient_spans`] clips, sorts and merges
    them.
    """

    def __call__(self, texts: list[str]) -> list[list[CharSpan]]: ...


# ----------------------------------------------------------------------------------------------------------------
# Sentence splitting
# ----------------------------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------------------------
# Rule-based tagger
# ----------------------------------------------------------------------------------------------------------------

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_YEAR = r"(?:1[0-9]{3}|20[0-9]{2})"
_DAY = r"(?:3[01]|[12][0-9]|0?[1-9])"
_GAP = r"[^\S\n]+"  # whitespace without line breaks
_DATE = re.compile(
    rf"(?<!\w)(?:(?:{_DAY}{_GAP})?(?:{_MONTHS})(?:{_GAP}{_DAY},?)?{_GAP}{_YEAR}|{_YEAR})(?!\w)"
)  # fmt: skip
_NUMBER = re.compile(r"(?<!\w)[0-9]+(?:[.,][0-9]+)*(?:%|(?!\w))")
# Words: runs of letters/digits, joined by inner hyphens or apostrophes ("Jean-Paul", "O'Brien").
_WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")
_GAP_ONLY = re.compile(_GAP)

# Lowercase words that may join two capitalised words inside a name ("University of Cambridge", "Ludwig van
# Beethoven").
_NAME_CONNECTORS = frozenset("of de da di du del della der den van von la le".split())
# Function words that are capitalised at the start of a sentence (or in titles) but are not names: they are removed
# from the start of a run of capitalised words and never form a name by themselves.
_STOPWORDS = frozenset(
    """the a an in on at of for by with from to into and or but nor as if so he she it its they them we i you his
    her their our my your this that these those there here then when while after before during since until
    although though because however also not no yes is was are were be been what who whom which where why how
    all some many most each every both either neither""".split()
)
# Capitalised words that are not names when they stand alone (a bare month or weekday).
_NOT_NAMES_ALONE = frozenset(
    m.lower() for m in _MONTHS.split("|") + "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
)
_LABEL_PRIORITY = {"DATE": 0, "NUMBER": 1, "NAME": 2}


class RuleBasedTagger:
    """A model-free salient span tagger: dates, numbers and capitalised names, by regular expressions.

    - **DATE**: a 4-digit year from 1000 to 2099 (`"1890"`), optionally preceded by a month (`"March 1890"`), a day
      and a month (`"12 March 1890"`) or a month and a day (`"March 12, 1890"`). Month names are English and
      capitalised.
    - **NUMBER**: ASCII digits with optional inner `,`/`.` groups and an optional trailing `%` (`"3,000.5"`,
      `"12%"`), not glued to letters (`"v2"`, `"1890s"` and `"2nd"` are not numbers).
    - **NAME**: a run of capitalised words (first character uppercase; words may contain hyphens or apostrophes, a
      trailing possessive `'s` is left out) separated only by spaces, possibly joined by a lowercase connector
      (`of`, `de`, `van`, `von`, ...) between two capitalised words. Common function words (`The`, `In`, `He`,
      ...) are removed from the start of a run and a bare month or weekday is not a name. A run never crosses a
      sentence boundary ([`split_sentences`]). The first word of a sentence is capitalised anyway, so **a single
      capitalised word at the start of a sentence is a name only if the same word also appears capitalised in the
      middle of a sentence somewhere in the same text**; a run of two or more capitalised words at the start of a
      sentence ("Alan Turing was ...") is always a name.

    Overlapping candidates are resolved by keeping the longest span (ties: DATE, then NUMBER, then NAME, then the
    earlier one), so `"12 March 1890"` is one DATE rather than a NUMBER, a NAME and a DATE.

    Example:

    ```python
    >>> from realm_hf.training.masking import RuleBasedTagger
    >>> RuleBasedTagger()(["Alan Turing was born in London on 23 June 1912."])
    [[(0, 11, 'NAME'), (24, 30, 'NAME'), (34, 46, 'DATE')]]
    ```
    """

    def __call__(self, texts: list[str]) -> list[list[CharSpan]]:
        """Tag every text.

        Args:
            texts (`list[str]`):
                The texts to tag.

        Returns:
            `list[list[tuple[int, int, str]]]`: for every text, sorted non-overlapping `(start, end, label)`
            character spans, with `label` one of `"DATE"`, `"NUMBER"` and `"NAME"`.
        """
        return [self.tag(text) for text in texts]

    def tag(self, text: str) -> list[CharSpan]:
        """Tag one text; see [`~RuleBasedTagger.__call__`]."""
        candidates = [(m.start(), m.end(), "DATE") for m in _DATE.finditer(text)]
        candidates += [(m.start(), m.end(), "NUMBER") for m in _NUMBER.finditer(text)]
        candidates += _name_spans(text)
        return resolve_overlaps(candidates, priority=_LABEL_PRIORITY)


def _name_spans(text: str) -> list[CharSpan]:
    sentences = [_words(text, start, end) for start, end in split_sentences(text)]
    mid_sentence_capitalised = {
        word for words in sentences for _, _, word in words[1:] if _is_capitalised(word)
    }  # fmt: skip
    spans = []
    for words in sentences:
        i = 0
        while i < len(words):
            if not _is_capitalised(words[i][2]):
                i += 1
                continue
            last = i
            while True:
                if last + 1 < len(words) and _is_capitalised(words[last + 1][2]) and _joined(text, words, last):
                    last += 1
                elif (
                    last + 2 < len(words)
                    and words[last + 1][2] in _NAME_CONNECTORS
                    and _is_capitalised(words[last + 2][2])
                    and _joined(text, words, last)
                    and _joined(text, words, last + 1)
                ):
                    last += 2
                else:
                    break
            first = i
            while first <= last and (words[first][2].lower() in _STOPWORDS or not _is_capitalised(words[first][2])):
                first += 1
            i = last + 1
            if first > last:
                continue
            word = words[first][2]
            if first == last:
                if word.lower() in _NOT_NAMES_ALONE:
                    continue
                if first == 0 and word not in mid_sentence_capitalised:
                    continue
            spans.append((words[first][0], words[last][1], "NAME"))
    return spans


def _words(text: str, start: int, end: int) -> list[tuple[int, int, str]]:
    words = []
    for match in _WORD.finditer(text, start, end):
        word_start, word_end = match.span()
        if word_end - word_start > 2 and text[word_end - 2] in "'\u2019" and text[word_end - 1] == "s":
            word_end -= 2  # possessive
        words.append((word_start, word_end, text[word_start:word_end]))
    return words


def _is_capitalised(word: str) -> bool:
    return word[:1].isupper()


def _joined(text: str, words: list[tuple[int, int, str]], i: int) -> bool:
    """Are words `i` and `i + 1` separated by spaces only (or by `". "` after an initial or a title, as in
    "J. R. R. Tolkien" or "Dr. Watson")?"""
    start, end, word = words[i]
    if text[end : end + 1] == "." and (len(word) == 1 or word.lower() in ABBREVIATIONS):
        end += 1
    return _GAP_ONLY.fullmatch(text, end, words[i + 1][0]) is not None


def resolve_overlaps(spans: Iterable[CharSpan], priority: dict[str, int] | None = None) -> list[CharSpan]:
    """Resolve overlapping spans by keeping the longest.

    Spans are considered longest first (ties: lower `priority[label]`, then earlier start) and kept when they do not
    overlap a span kept before. Empty or reversed spans are dropped.

    Args:
        spans (`Iterable[tuple[int, int, str]]`):
            Candidate `(start, end, label)` spans.
        priority (`dict[str, int]`, *optional*):
            Tie-breaking rank of labels (lower wins); unknown labels rank last.

    Returns:
        `list[tuple[int, int, str]]`: the kept spans, sorted by start.
    """
    priority = priority or {}
    ordered = sorted(
        ((s, e, label) for s, e, label in spans if e > s),
        key=lambda span: (span[0] - span[1], priority.get(span[2], len(priority)), span[0]),
    )
    starts: list[int] = []
    kept: list[CharSpan] = []
    for span in ordered:
        pos = bisect.bisect_left(starts, span[0])
        if pos > 0 and kept[pos - 1][1] > span[0]:
            continue
        if pos < len(kept) and kept[pos][0] < span[1]:
            continue
        starts.insert(pos, span[0])
        kept.insert(pos, span)
    return kept


# ----------------------------------------------------------------------------------------------------------------
# Model-based taggers (optional dependencies, imported lazily)
# ----------------------------------------------------------------------------------------------------------------


class SpacyTagger:
    """Salient spans from a spaCy named-entity recognizer (entities and dates, as spaCy labels them).

    spaCy and the model are optional: `pip install spacy && python -m spacy download en_core_web_sm`. The pipeline is
    loaded when the tagger is created; a pickled tagger (for example in a `Dataset.map` worker) stores only its
    arguments and loads the model again.

    Args:
        model (`str`, *optional*, defaults to `"en_core_web_sm"`):
            Name or path of an installed spaCy pipeline with an `ner` component.
        labels (`Sequence[str]`, *optional*):
            Entity labels to keep (for example `["PERSON", "ORG", "GPE", "DATE"]`); all by default.
        batch_size (`int`, *optional*, defaults to 256):
            Texts per `nlp.pipe` batch.
        load_kwargs (`dict`, *optional*):
            Passed to `spacy.load` (for example `{"disable": ["parser", "lemmatizer"]}`).

    Raises:
        `ImportError`: if spaCy is not installed.
        `OSError`: if the spaCy model is not installed.
    """

    def __init__(
        self,
        model: str = "en_core_web_sm",
        labels: Sequence[str] | None = None,
        batch_size: int = 256,
        load_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.labels = None if labels is None else list(labels)
        self.batch_size = batch_size
        self.load_kwargs = dict(load_kwargs or {})
        try:
            import spacy
        except ImportError as err:
            raise ImportError(
                "SpacyTagger needs spaCy, which is not installed. Install it and a model with "
                f"`pip install spacy && python -m spacy download {model}`, or use `RuleBasedTagger` (no model) or "
                "`TransformersNERTagger`."
            ) from err
        try:
            self._nlp = spacy.load(model, **self.load_kwargs)
        except OSError as err:
            raise OSError(
                f"The spaCy model {model!r} is not installed. Install it with `python -m spacy download {model}`."
            ) from err

    def __reduce__(self):
        return (type(self), (self.model, self.labels, self.batch_size, self.load_kwargs))

    def __call__(self, texts: list[str]) -> list[list[CharSpan]]:
        """Tag every text with the spaCy entity recognizer.

        Args:
            texts (`list[str]`):
                The texts to tag (each shorter than the pipeline's `nlp.max_length` characters).

        Returns:
            `list[list[tuple[int, int, str]]]`: for every text, `(start_char, end_char, label)` of its entities.
        """
        keep = None if self.labels is None else set(self.labels)
        return [
            [(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents if keep is None or ent.label_ in keep]
            for doc in self._nlp.pipe(texts, batch_size=self.batch_size)
        ]


class TransformersNERTagger:
    """Salient spans from a `transformers` token-classification model (for example a CoNLL-2003 BERT tagger, as
    REALM used).

    Wraps `transformers.pipeline("token-classification", aggregation_strategy="simple")`; entity groups become span
    labels. Texts are tagged sentence by sentence ([`split_sentences`]) so that long documents fit the model.

    Args:
        model_or_pipeline (`str`, [`PreTrainedModel`] or [`~transformers.Pipeline`]):
            A model id or local directory, a loaded token-classification model (then pass `tokenizer`), or a ready
            token-classification pipeline (used as is; it should aggregate entities, for example with
            `aggregation_strategy="simple"`).
        tokenizer ([`PreTrainedTokenizerBase`] or `str`, *optional*):
            Tokenizer of the model (a fast tokenizer, so that character offsets are available).
        labels (`Sequence[str]`, *optional*):
            Entity groups to keep (for example `["PER", "ORG", "LOC", "MISC"]`); all by default.
        batch_size (`int`, *optional*, defaults to 32):
            Sentences per forward pass.
        device (`int`, `str` or `torch.device`, *optional*):
            Device of the pipeline.
        split_into_sentences (`bool`, *optional*, defaults to `True`):
            Tag sentence by sentence (recommended); otherwise whole texts are passed to the pipeline.
        **pipeline_kwargs:
            Passed to `transformers.pipeline`.

    Raises:
        `OSError`: if the model cannot be loaded (not a local directory and not in the Hub cache).
    """

    def __init__(
        self,
        model_or_pipeline: Any,
        tokenizer: Any = None,
        labels: Sequence[str] | None = None,
        batch_size: int = 32,
        device: Any = None,
        split_into_sentences: bool = True,
        **pipeline_kwargs: Any,
    ) -> None:

        self.labels = None if labels is None else list(labels)
        self.batch_size = batch_size
        self.split_into_sentences = split_into_sentences
        if isinstance(model_or_pipeline, Pipeline):
            self.pipeline = model_or_pipeline
            return
        try:
            self.pipeline = pipeline(
                "token-classification",
                model=model_or_pipeline,
                tokenizer=tokenizer,
                aggregation_strategy="simple",
                device=device,
                **pipeline_kwargs,
            )
        except OSError as err:
            raise OSError(
                f"Could not load the token-classification model {model_or_pipeline!r}: {err}\nPass a local directory "
                "holding a model and its tokenizer, or download it first (with network access) with "
                "`hf download <model_id>`, for example `hf download dslim/bert-base-NER`."
            ) from err
        if not getattr(self.pipeline.tokenizer, "is_fast", False):
            logger.warning("TransformersNERTagger: a slow tokenizer has no character offsets; no span will be found.")

    def __call__(self, texts: list[str]) -> list[list[CharSpan]]:
        """Tag every text.

        Args:
            texts (`list[str]`):
                The texts to tag.

        Returns:
            `list[list[tuple[int, int, str]]]`: for every text, `(start, end, entity_group)` character spans.
        """
        pieces: list[tuple[int, int, int]] = []  # (text index, start, end)
        for i, text in enumerate(texts):
            if self.split_into_sentences:
                pieces.extend((i, start, end) for start, end in split_sentences(text))
            elif text.strip():
                pieces.append((i, 0, len(text)))
        results: list[list[CharSpan]] = [[] for _ in texts]
        if not pieces:
            return results
        outputs = self.pipeline([texts[i][start:end] for i, start, end in pieces], batch_size=self.batch_size)
        keep = None if self.labels is None else set(self.labels)
        for (i, offset, _), entities in zip(pieces, outputs):
            for entity in entities:
                label = entity.get("entity_group", entity.get("entity"))
                start, end = entity.get("start"), entity.get("end")
                if start is None or end is None or (keep is not None and label not in keep):
                    continue
                results[i].append((offset + int(start), offset + int(end), str(label)))
        return results


# ----------------------------------------------------------------------------------------------------------------
# Tagging a corpus
# ----------------------------------------------------------------------------------------------------------------


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
