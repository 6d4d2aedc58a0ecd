"""Salient-span taggers: texts in, character spans `(start, end, label)` out.

REALM (Guu et al. 2020, §3.4) masks *salient spans*, named entities and dates, tagged offline (the paper used a BERT
tagger trained on CoNLL-2003 and a date regex; the tagger was not released). Three taggers implement
[`SalientSpanTagger`]: [`RuleBasedTagger`] (no model: capitalised names, dates and numbers), [`SpacyTagger`] (a spaCy
entity recognizer) and [`TransformersNERTagger`] (a `transformers` token-classification model, as REALM used);
[`make_tagger`] builds one by name, as `realm-hf pretrain --corpus --tagger` does. Aligning the spans to wordpieces
(through the tokenizer's offsets) and splitting the corpus into sentences is
[`~realm_hf.training.masking.tag_salient_spans`]'s part.
"""

import bisect
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from transformers import Pipeline, pipeline

from ..logging import get_logger
from ..retrieval.corpus import ABBREVIATIONS, split_sentences


logger = get_logger(__name__)

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
    >>> from realm_hf.training.taggers import RuleBasedTagger
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


#: The taggers [`make_tagger`] builds, by name.
TAGGERS = ("rule", "spacy", "ner")


def make_tagger(name: str = "rule", model: str | None = None) -> "SalientSpanTagger":
    """The salient-span tagger called `name`: `"rule"` ([`RuleBasedTagger`], no model), `"spacy"` ([`SpacyTagger`]
    of the installed pipeline `model`, default `en_core_web_sm`) or `"ner"` ([`TransformersNERTagger`] of the
    token-classification model `model`, a local directory or Hub id; required). Models are loaded here, so that a
    missing one is reported before any work.

    Raises:
        `ValueError`: for an unknown name, a model given to the rule-based tagger, or `"ner"` without a model.
    """
    if name not in TAGGERS:
        raise ValueError(f"tagger must be one of {TAGGERS}, got {name!r}.")
    if name == "rule":
        if model is not None:
            raise ValueError("The rule-based tagger takes no model (tagger_model is for 'spacy' and 'ner').")
        return RuleBasedTagger()
    if name == "spacy":
        return SpacyTagger(model or "en_core_web_sm")
    if model is None:
        raise ValueError("The 'ner' tagger needs tagger_model: a token-classification model (directory or Hub id).")
    return TransformersNERTagger(model)


__all__ = [
    "TAGGERS",
    "CharSpan",
    "RuleBasedTagger",
    "SalientSpanTagger",
    "SpacyTagger",
    "TransformersNERTagger",
    "make_tagger",
    "resolve_overlaps",
]
