"""Data collators for REALM pre-training (salient span masking) and for the Inverse Cloze Task (ICT) warm start.

- [`DataCollatorForRealmPreTraining`] turns sentences tagged by [`~realm_hf.training.masking.tag_salient_spans`] into masked
  queries `[CLS] sentence [SEP]` with one salient span masked (REALM, Guu et al. 2020, §3.4), or with the random
  token / random span masking of the paper's ablation (Table 2).
- [`prepare_ict_examples`] and [`DataCollatorForInverseClozeTask`] build ICT batches (ORQA, Lee et al. 2019): a
  random sentence of a block is the query, the rest of the block (the sentence itself is removed with probability
  0.9) is the positive context, and the other blocks of the batch are the negatives.

Both collators draw from their own random generators (seeded by `seed`), never from the global ones. In a
`torch.utils.data.DataLoader` worker the generators are re-seeded with `seed + worker_id`, so that workers do not
repeat each other's masks.
"""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ..logging import get_logger
from ..retrieval.corpus import split_sentences
from ..retrieval.formats import pad_pairs, pair, truncate_document


logger = get_logger(__name__)

_IGNORE_INDEX = -100
MASKING_MODES = ("salient_span", "random_token", "random_span")
#: Longest span drawn by the random span masking (SpanBERT clips its geometric distribution at 10).
MAX_RANDOM_SPAN_LENGTH = 10


class _Generators:
    """A `random.Random` and a `torch.Generator` seeded together, re-seeded once per DataLoader worker."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self.worker_id: int | None = None
        self._reseed(seed)

    def _reseed(self, seed: int | None) -> None:
        self.random = random.Random(seed)
        self.torch = torch.Generator()
        if seed is None:
            self.torch.seed()
        else:
            self.torch.manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"random": self.random.getstate(), "torch": self.torch.get_state(), "worker_id": self.worker_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.random.setstate(state["random"])
        self.torch.set_state(state["torch"])
        self.worker_id = state["worker_id"]

    def refresh_for_worker(self) -> None:
        info = torch.utils.data.get_worker_info()
        worker_id = None if info is None else info.id
        if worker_id != self.worker_id:
            self.worker_id = worker_id
            self._reseed(None if self.seed is None else self.seed + (worker_id or 0))


def _as_id_list(values: Any) -> list[int]:
    if isinstance(values, torch.Tensor):
        return values.reshape(-1).tolist()
    if isinstance(values, np.ndarray):
        return values.reshape(-1).tolist()
    return [int(v) for v in values]


def _pad_length(length: int, multiple: int | None) -> int:
    if multiple:
        return int(math.ceil(length / multiple) * multiple)
    return length


@dataclass
class DataCollatorForRealmPreTraining:
    """Builds masked-language-model queries for REALM pre-training from tagged sentences.

    Every example is one sentence from [`~realm_hf.training.masking.tag_salient_spans`]: a dict with `token_ids` (wordpieces
    without special tokens), `salient_spans` (`[start, end)` wordpiece ranges) and `doc_id` (the document the
    sentence comes from, so that the model can exclude it from retrieval; `-1` when missing). The sentence is
    truncated to `max_length - 2` wordpieces (spans that no longer fit are dropped) and becomes
    `[CLS] sentence [SEP]`, padded to the longest in the batch. Masking:

    - `"salient_span"` (REALM): exactly **one** salient span per sentence, chosen uniformly, has every wordpiece
      replaced by `[MASK]` (no 80/10/10 replacement). A sentence without a salient span falls back to random token
      selection (probability `mlm_probability`, at least one token), also replaced by `[MASK]` only; the fallbacks
      are counted in `num_salient_fallbacks` and logged.
    - `"random_token"` (BERT): every wordpiece is selected with probability `mlm_probability` (at least one per
      sentence); selected wordpieces become `[MASK]` 80% of the time, a random non-special token 10% of the time and
      stay unchanged 10% of the time.
    - `"random_span"` (SpanBERT-style): contiguous spans with geometric lengths (mean `mean_span_length`, at most
      [`MAX_RANDOM_SPAN_LENGTH`]) at uniform positions are masked with `[MASK]` until `round(mlm_probability *
      length)` wordpieces (at least one) are covered.

    `[CLS]`, `[SEP]` and padding are never masked, and every sentence with at least one wordpiece has at least one
    masked position.

    Args:
        tokenizer ([`PreTrainedTokenizerBase`]):
            The tokenizer whose ids the examples hold (provides `[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`).
        masking (`str`, *optional*, defaults to `"salient_span"`):
            `"salient_span"`, `"random_token"` or `"random_span"`.
        mlm_probability (`float`, *optional*, defaults to 0.15):
            Fraction of wordpieces masked by the random modes (and the salient fallback).
        max_length (`int`, *optional*, defaults to 64):
            Maximum query length including `[CLS]` and `[SEP]` (REALM's `query_seq_len`).
        mean_span_length (`float`, *optional*, defaults to 3.0):
            Mean length of the random spans (`"random_span"` only); at least 1.
        seed (`int`, *optional*):
            Seed of the collator's own random generators; the global random state is never used or changed.
        pad_to_multiple_of (`int`, *optional*):
            Pad the sequence length to a multiple of this value.

    Returns (of `__call__`):
        `dict[str, torch.Tensor]` with `input_ids`, `attention_mask`, `token_type_ids` (zeros) and `labels` (the
        original id at masked positions, -100 elsewhere) of shape `(batch_size, seq_len)`; `mlm_mask` (float, 1.0 at
        masked positions) of the same shape; and `doc_ids` (long) of shape `(batch_size,)`.

    Example:

    ```python
    >>> collator = DataCollatorForRealmPreTraining(tokenizer, masking="salient_span", seed=0)
    >>> batch = collator([{"token_ids": [7, 8, 9, 10], "salient_spans": [[0, 2]], "doc_id": 3}])
    >>> batch["input_ids"]  # [CLS] [MASK] [MASK] 9 10 [SEP]
    ```
    """

    tokenizer: PreTrainedTokenizerBase
    masking: Literal["salient_span", "random_token", "random_span"] = "salient_span"
    mlm_probability: float = 0.15
    max_length: int = 64
    mean_span_length: float = 3.0
    seed: int | None = None
    pad_to_multiple_of: int | None = None
    num_examples: int = field(default=0, init=False)
    num_salient_fallbacks: int = field(default=0, init=False)
    num_batches: int = field(default=0, init=False)
    _generators: _Generators = field(init=False, repr=False)
    _state_before_last_batch: dict[str, Any] | None = field(default=None, init=False, repr=False)
    _random_token_ids: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.masking not in MASKING_MODES:
            raise ValueError(f"`masking` must be one of {MASKING_MODES}, got {self.masking!r}.")
        if not 0.0 < self.mlm_probability <= 1.0:
            raise ValueError(f"`mlm_probability` must be in (0, 1], got {self.mlm_probability}.")
        if self.max_length < 3:
            raise ValueError(f"`max_length` must be >= 3 ([CLS] token [SEP]), got {self.max_length}.")
        if self.mean_span_length < 1:
            raise ValueError(f"`mean_span_length` must be >= 1, got {self.mean_span_length}.")
        for name in ("cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id"):
            if getattr(self.tokenizer, name, None) is None:
                raise ValueError(f"The tokenizer has no {name[: -len('_token_id')]} token, which the collator needs.")
        self._generators = _Generators(self.seed)
        special = set(self.tokenizer.all_special_ids)
        self._random_token_ids = torch.tensor(
            [i for i in range(len(self.tokenizer)) if i not in special], dtype=torch.long
        )

    def state_dict(self) -> dict[str, Any]:
        """The random generator states and counters, so that a resumed run masks as an uninterrupted one would.

        `Accelerator.register_for_checkpointing(collator)` saves and restores it with the training state (this is the
        state of the collator in the main process: with DataLoader workers each worker has its own copy).

        Returns:
            `dict[str, Any]`: the state.
        """
        return {
            "generators": self._generators.state_dict(),
            "num_examples": self.num_examples,
            "num_salient_fallbacks": self.num_salient_fallbacks,
            "num_batches": self.num_batches,
        }

    def state_dict_after(self, num_batches: int) -> dict[str, Any]:
        """The state as it was right after the collator's `num_batches`-th batch.

        A DataLoader may collate one batch ahead of the training loop (Accelerate's does, to detect the last batch),
        so at a checkpoint the collator's current state can already include the draws of a batch the loop has not
        consumed; a run resumed from it would mask that batch differently. The loop saves the state after the
        batches it consumed instead: the current one, or the one before the batch collated ahead.

        Raises:
            `ValueError`: if `num_batches` is neither the number of batches collated nor one less.
        """
        if num_batches == self.num_batches:
            return self.state_dict()
        if num_batches == self.num_batches - 1 and self._state_before_last_batch is not None:
            return self._state_before_last_batch
        raise ValueError(
            f"The collator has collated {self.num_batches} batches; its state after {num_batches} is not kept."
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from [`~DataCollatorForRealmPreTraining.state_dict`].

        Args:
            state (`dict[str, Any]`):
                The saved state.
        """
        self._generators.load_state_dict(state["generators"])
        self.num_examples = int(state["num_examples"])
        self.num_salient_fallbacks = int(state["num_salient_fallbacks"])
        self.num_batches = int(state.get("num_batches", 0))
        self._state_before_last_batch = None

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate tagged sentences into a masked batch.

        Args:
            examples (`Sequence[dict]`):
                Rows with `token_ids`, `salient_spans` (salient mode) and `doc_id`.

        Returns:
            `dict[str, torch.Tensor]`: see the class docstring.
        """
        if len(examples) == 0:
            raise ValueError("DataCollatorForRealmPreTraining got an empty list of examples.")
        self._state_before_last_batch = self.state_dict()
        self.num_batches += 1
        self._generators.refresh_for_worker()
        rng = self._generators.random
        budget = self.max_length - 2
        token_lists = [_as_id_list(example["token_ids"])[:budget] for example in examples]
        lengths = torch.tensor([len(ids) for ids in token_lists], dtype=torch.long)
        batch_size = len(examples)
        seq_len = _pad_length(int(lengths.max()) + 2, self.pad_to_multiple_of)

        input_ids = torch.full((batch_size, seq_len), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, seq_len), dtype=torch.long)
        for i, ids in enumerate(token_lists):
            n = len(ids)
            input_ids[i, 0] = self.tokenizer.cls_token_id
            input_ids[i, 1 : n + 1] = torch.tensor(ids, dtype=torch.long)
            input_ids[i, n + 1] = self.tokenizer.sep_token_id
            attention_mask[i, : n + 2] = 1
        positions = torch.arange(seq_len).unsqueeze(0)
        real_tokens = (positions >= 1) & (positions <= lengths.unsqueeze(1))

        selected = torch.zeros((batch_size, seq_len), dtype=torch.bool)
        if self.masking == "salient_span":
            fallback_rows = []
            for i, (example, n) in enumerate(zip(examples, lengths.tolist())):
                spans = self._valid_spans(example.get("salient_spans"), n)
                if spans:
                    start, end = spans[rng.randrange(len(spans))]
                    selected[i, start + 1 : end + 1] = True
                elif n > 0:
                    fallback_rows.append(i)
            if fallback_rows:
                rows = torch.tensor(fallback_rows)
                selected[rows] = self._random_token_selection(real_tokens[rows])
                self.num_salient_fallbacks += len(fallback_rows)
                logger.debug(
                    "%d of %d sentences have no salient span; masked random tokens instead.",
                    len(fallback_rows),
                    batch_size,
                )
                logger.warning_once(
                    "Some sentences have no salient span (within max_length); they are masked at random instead "
                    "(`DataCollatorForRealmPreTraining.num_salient_fallbacks` counts them). To train on salient spans "
                    "only, filter the sentences first: `dataset.filter(lambda row: len(row['salient_spans']) > 0)`."
                )
        elif self.masking == "random_token":
            selected = self._random_token_selection(real_tokens)
        else:
            for i, n in enumerate(lengths.tolist()):
                for start, end in self._random_spans(n, rng):
                    selected[i, start + 1 : end + 1] = True
        self.num_examples += batch_size

        labels = torch.where(selected, input_ids, torch.full_like(input_ids, _IGNORE_INDEX))
        masked_input_ids = input_ids.clone()
        if self.masking == "random_token":
            gen = self._generators.torch
            replace = selected & (torch.rand(selected.shape, generator=gen) < 0.8)
            randomize = selected & ~replace & (torch.rand(selected.shape, generator=gen) < 0.5)
            masked_input_ids[replace] = self.tokenizer.mask_token_id
            if len(self._random_token_ids) > 0:
                picks = torch.randint(len(self._random_token_ids), (int(randomize.sum()),), generator=gen)
                masked_input_ids[randomize] = self._random_token_ids[picks]
        else:
            masked_input_ids[selected] = self.tokenizer.mask_token_id

        return {
            "input_ids": masked_input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": torch.zeros_like(input_ids),
            "labels": labels,
            "mlm_mask": selected.float(),
            "doc_ids": torch.tensor([int(example.get("doc_id", -1)) for example in examples], dtype=torch.long),
        }

    @staticmethod
    def _valid_spans(spans: Any, length: int) -> list[tuple[int, int]]:
        """The spans that are non-empty and lie inside `[0, length)` after truncation."""
        if spans is None:
            return []
        valid = []
        for span in spans:
            if len(span) != 2:
                continue
            start, end = int(span[0]), int(span[1])
            if 0 <= start < end <= length:
                valid.append((start, end))
        return valid

    def _random_token_selection(self, candidates: torch.Tensor) -> torch.Tensor:
        """Select each candidate position with probability `mlm_probability`, at least one per non-empty row."""
        gen = self._generators.torch
        noise = torch.rand(candidates.shape, generator=gen)
        selected = candidates & (noise < self.mlm_probability)
        empty = ~selected.any(dim=1) & candidates.any(dim=1)
        if empty.any():
            # One uniformly random candidate per empty row: the argmax of fresh noise over the candidates.
            scores = torch.rand(candidates.shape, generator=gen).masked_fill(~candidates, -1.0)
            rows = torch.nonzero(empty).squeeze(1)
            selected[rows, scores[rows].argmax(dim=1)] = True
        return selected

    def _random_spans(self, length: int, rng: random.Random) -> list[tuple[int, int]]:
        """Contiguous spans of geometric length covering about `mlm_probability * length` positions of `[0, length)`."""
        if length == 0:
            return []
        target = max(1, round(self.mlm_probability * length))
        covered = np.zeros(length, dtype=bool)
        spans = []
        p = 1.0 / self.mean_span_length
        for _ in range(10 * length):
            remaining = target - int(covered.sum())
            if remaining <= 0:
                break
            if p >= 1.0:
                span_length = 1
            else:
                span_length = 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))
            span_length = min(span_length, MAX_RANDOM_SPAN_LENGTH, remaining, length)
            start = rng.randrange(length - span_length + 1)
            if covered[start : start + span_length].any():
                continue  # keep spans disjoint, so that the masked count stays close to the target
            covered[start : start + span_length] = True
            spans.append((start, start + span_length))
        if not spans:
            start = rng.randrange(length)
            spans.append((start, start + 1))
        return spans


# ----------------------------------------------------------------------------------------------------------------
# Inverse Cloze Task
# ----------------------------------------------------------------------------------------------------------------


def ict_example_features(with_doc_id: bool = False) -> datasets.Features:
    """The `datasets.Features` of the output of [`prepare_ict_examples`].

    Args:
        with_doc_id (`bool`, *optional*, defaults to `False`):
            Include the `doc_id` column.

    Returns:
        `datasets.Features`: `title_token_ids` (list of int32) and `sentence_token_ids` (list of lists of int32),
        plus `doc_id` (int64) if asked.
    """
    features = {
        "title_token_ids": datasets.List(datasets.Value("int32")),
        "sentence_token_ids": datasets.List(datasets.List(datasets.Value("int32"))),
    }
    if with_doc_id:
        features["doc_id"] = datasets.Value("int64")
    return datasets.Features(features)


def prepare_ict_examples(
    blocks_dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    num_proc: int | None = None,
    batch_size: int = 1000,
    title_column: str = "title",
    text_column: str = "text",
    min_sentences: int = 2,
    keep_in_memory: bool = False,
) -> datasets.Dataset:
    """Turn evidence blocks into Inverse Cloze Task examples: the title and the sentences, tokenized once.

    Each block's text is split with [`~realm_hf.retrieval.corpus.split_sentences`] and every sentence is tokenized without
    special tokens (special-token strings in the text are tokenized as text). Sentences without wordpieces are dropped,
    then blocks with fewer than `min_sentences` sentences (ORQA drops masked examples of single-sentence blocks).

    Args:
        blocks_dataset (`datasets.Dataset`):
            Evidence blocks, for example from [`~realm_hf.retrieval.corpus.split_documents_into_blocks`], with a `title` and a
            `text` column (a missing title column means empty titles). A `doc_id` column is kept; other columns are
            dropped.
        tokenizer ([`PreTrainedTokenizerBase`]):
            A BERT-style tokenizer.
        num_proc (`int`, *optional*):
            Number of processes for `Dataset.map`.
        batch_size (`int`, *optional*, defaults to 1000):
            Blocks per `Dataset.map` batch.
        title_column (`str`, *optional*, defaults to `"title"`):
            Title column.
        text_column (`str`, *optional*, defaults to `"text"`):
            Text column.
        min_sentences (`int`, *optional*, defaults to 2):
            Blocks with fewer sentences are dropped.
        keep_in_memory (`bool`, *optional*, defaults to `False`):
            Passed to `Dataset.map`.

    Returns:
        `datasets.Dataset` with `title_token_ids` (list of int32), `sentence_token_ids` (list of lists of int32) and
        `doc_id` if the input has it; one row per kept block.
    """
    if text_column not in blocks_dataset.column_names:
        raise ValueError(f"Column {text_column!r} is missing; the dataset has columns {blocks_dataset.column_names}.")
    with_doc_id = "doc_id" in blocks_dataset.column_names
    examples = blocks_dataset.map(
        _ict_batch,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=blocks_dataset.column_names,
        features=ict_example_features(with_doc_id),
        keep_in_memory=keep_in_memory,
        desc="Preparing ICT examples",
        fn_kwargs={
            "tokenizer": tokenizer,
            "title_column": title_column if title_column in blocks_dataset.column_names else None,
            "text_column": text_column,
            "min_sentences": min_sentences,
            "with_doc_id": with_doc_id,
        },
    )
    logger.info("Prepared %d ICT examples from %d blocks.", len(examples), len(blocks_dataset))
    return examples


def _ict_batch(
    batch: dict[str, list],
    *,
    tokenizer: PreTrainedTokenizerBase,
    title_column: str | None,
    text_column: str,
    min_sentences: int,
    with_doc_id: bool,
) -> dict[str, list]:
    texts = ["" if text is None else str(text) for text in batch[text_column]]
    titles = [
        "" if title is None else str(title) for title in (batch[title_column] if title_column else [""] * len(texts))
    ]
    sentence_texts, owners = [], []
    for i, text in enumerate(texts):
        for start, end in split_sentences(text):
            sentence_texts.append(text[start:end])
            owners.append(i)
    enc_kwargs = {"add_special_tokens": False, "split_special_tokens": True, "verbose": False}
    title_ids = tokenizer(titles, **enc_kwargs)["input_ids"] if titles else []
    sentence_ids = tokenizer(sentence_texts, **enc_kwargs)["input_ids"] if sentence_texts else []
    per_block: list[list[np.ndarray]] = [[] for _ in texts]
    for owner, ids in zip(owners, sentence_ids):
        if len(ids) > 0:
            per_block[owner].append(np.asarray(ids, dtype=np.int32))
    out: dict[str, list] = {"title_token_ids": [], "sentence_token_ids": []}
    if with_doc_id:
        out["doc_id"] = []
    for i, sentences in enumerate(per_block):
        if len(sentences) < max(min_sentences, 1):
            continue
        out["title_token_ids"].append(np.asarray(title_ids[i], dtype=np.int32))
        out["sentence_token_ids"].append(sentences)
        if with_doc_id:
            out["doc_id"].append(int(batch["doc_id"][i]))
    return out


@dataclass
class DataCollatorForInverseClozeTask:
    """Builds Inverse Cloze Task batches (ORQA, Lee et al. 2019) with in-batch negatives.

    For every block (an example from [`prepare_ict_examples`]: `title_token_ids` and `sentence_token_ids`), one
    sentence is chosen uniformly as the query `[CLS] sentence [SEP]` (truncated to `query_max_length`). The context
    is `[CLS] title [SEP] other sentences [SEP]` (token type 0 up to the first `[SEP]`, 1 after it); with probability
    `remove_sentence_probability` the query sentence is removed from it, otherwise it stays in place. A block with a
    single sentence always keeps it (there would be nothing left). The title is truncated to half of the block budget
    and the body to the rest. Query `i` belongs with block `i`: `labels = arange(batch_size)`.

    Args:
        tokenizer ([`PreTrainedTokenizerBase`]):
            The tokenizer whose ids the examples hold.
        query_max_length (`int`, *optional*, defaults to 64):
            Maximum query length including `[CLS]` and `[SEP]`.
        block_max_length (`int`, *optional*, defaults to 288):
            Maximum context length including `[CLS]` and both `[SEP]`.
        remove_sentence_probability (`float`, *optional*, defaults to 0.9):
            Probability that the query sentence is removed from its context (ORQA's `mask_rate`).
        seed (`int`, *optional*):
            Seed of the collator's own random generator; the global random state is never used or changed.
        pad_to_multiple_of (`int`, *optional*):
            Pad both sequence lengths to a multiple of this value.

    Returns (of `__call__`):
        `dict[str, torch.Tensor]`: `query_input_ids`, `query_attention_mask`, `query_token_type_ids` of shape
        `(batch_size, query_len)`; `block_input_ids`, `block_attention_mask`, `block_token_type_ids` of shape
        `(batch_size, block_len)`; `labels` of shape `(batch_size,)`.
    """

    tokenizer: PreTrainedTokenizerBase
    query_max_length: int = 64
    block_max_length: int = 288
    remove_sentence_probability: float = 0.9
    seed: int | None = None
    pad_to_multiple_of: int | None = None
    _generators: _Generators = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.query_max_length < 3:
            raise ValueError(f"`query_max_length` must be >= 3, got {self.query_max_length}.")
        if self.block_max_length < 4:
            raise ValueError(f"`block_max_length` must be >= 4, got {self.block_max_length}.")
        if not 0.0 <= self.remove_sentence_probability <= 1.0:
            raise ValueError(
                f"`remove_sentence_probability` must be in [0, 1], got {self.remove_sentence_probability}."
            )
        self._generators = _Generators(self.seed)

    def state_dict(self) -> dict[str, Any]:
        """The random generator states (for `Accelerator.register_for_checkpointing`).

        Returns:
            `dict[str, Any]`: the state.
        """
        return {"generators": self._generators.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from [`~DataCollatorForInverseClozeTask.state_dict`].

        Args:
            state (`dict[str, Any]`):
                The saved state.
        """
        self._generators.load_state_dict(state["generators"])

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ICT examples.

        Args:
            examples (`Sequence[dict]`):
                Rows with `title_token_ids` and `sentence_token_ids` (at least one non-empty sentence each).

        Returns:
            `dict[str, torch.Tensor]`: see the class docstring.
        """
        if len(examples) == 0:
            raise ValueError("DataCollatorForInverseClozeTask got an empty list of examples.")
        self._generators.refresh_for_worker()
        rng = self._generators.random
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        queries, blocks = [], []
        for idx, example in enumerate(examples):
            sentences = [_as_id_list(s) for s in example["sentence_token_ids"]]
            sentences = [s for s in sentences if s]
            if not sentences:
                raise ValueError(f"ICT example {idx} has no non-empty sentence.")
            q = rng.randrange(len(sentences))
            remove = rng.random() < self.remove_sentence_probability and len(sentences) > 1
            queries.append([cls_id, *sentences[q][: self.query_max_length - 2], sep_id])
            title = example.get("title_token_ids")
            title = [] if title is None else _as_id_list(title)
            body = [tok for j, s in enumerate(sentences) if not (remove and j == q) for tok in s]
            # The block exactly as the index lays it out for the document tower.
            title, body = truncate_document(title, body, self.block_max_length)
            blocks.append(pair(cls_id, title, sep_id, body))

        query_ids, query_mask = self._pad(queries)
        block = pad_pairs(blocks, self.tokenizer.pad_token_id, self.pad_to_multiple_of)
        return {
            "query_input_ids": query_ids,
            "query_attention_mask": query_mask,
            "query_token_type_ids": torch.zeros_like(query_ids),
            "block_input_ids": block["input_ids"],
            "block_attention_mask": block["attention_mask"],
            "block_token_type_ids": block["token_type_ids"],
            "labels": torch.arange(len(examples), dtype=torch.long),
        }

    def _pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        length = _pad_length(max(len(s) for s in sequences), self.pad_to_multiple_of)
        ids = torch.full((len(sequences), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for i, seq in enumerate(sequences):
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = 1
        return ids, mask
