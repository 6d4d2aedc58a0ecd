"""How much retrieval helps REALM's encoder read: masked-LM accuracy with no document, with a given document, and
through retrieval.

REALM's masked-LM signal reaches the retriever only where a retrieved document makes the masked span easier to
predict than no document does (the paper's "retrieval utility"). [`masked_lm_reading`] measures the three readings of
the same masked sentences side by side, so that a run shows whether that signal exists before it spends steps on it:
an encoder that predicts the spans as well without any document (it has memorised the corpus) has no reason to
retrieve, and one that cannot use even the sentence's own document gives the retriever nothing to learn from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def read_with_documents(model, retriever, batch: dict, block_rows) -> object:
    """The masked-LM forward of `batch` with one given candidate per sentence and no retrieval.

    Args:
        model ([`RealmForPreTraining`]): The model (its encoder reads; its towers score the single candidate).
        retriever ([`RealmRetriever`]): Supplies the blocks' tokens (any retriever over the same corpus).
        batch (`dict`): From [`DataCollatorForRealmPreTraining`] (`input_ids`, `attention_mask`, `token_type_ids`,
            `labels`).
        block_rows: One corpus row per sentence; -1 is the null (empty) document.

    Returns:
        [`RealmForPreTrainingOutput`]
    """
    inputs = retriever.pretraining_inputs(
        np.asarray(block_rows).reshape(-1, 1),
        retriever.question_token_ids(batch["input_ids"], batch["attention_mask"]),
        model.config.block_seq_len,
    )
    inputs.pop("retrieved_block_ids")
    return model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}, **inputs)


def first_blocks(block_doc_ids) -> np.ndarray:
    """`row_of_doc`: for each document id, the corpus row of its first block (-1 for an id with no block), from the
    corpus' `doc_id` column; index it with [`rows_of_documents`]. Computed once per corpus, not per batch."""
    block_doc = np.asarray(block_doc_ids, dtype=np.int64)
    docs, first = np.unique(block_doc, return_index=True)
    row_of_doc = np.full(int(docs.max()) + 1 if len(docs) else 0, -1, dtype=np.int64)
    row_of_doc[docs] = first
    return row_of_doc


def rows_of_documents(row_of_doc: np.ndarray, doc_ids: Sequence[int]) -> np.ndarray:
    """The corpus row of the first block of each document in `doc_ids` ([`first_blocks`]'s lookup).

    Raises:
        `ValueError`: If a document has no block in the corpus.
    """
    ids = np.asarray(doc_ids, dtype=np.int64)
    known = (ids >= 0) & (ids < len(row_of_doc))
    rows = np.where(known, row_of_doc[np.where(known, ids, 0)], -1)
    missing = sorted(set(ids[rows < 0].tolist()))
    if missing:
        raise ValueError(f"{len(missing)} documents have no block in the corpus, for example {missing[:3]}.")
    return rows


@torch.no_grad()
def masked_lm_reading(model, batches: Sequence[dict], retriever=None) -> dict[str, float]:
    r"""
    Masked-LM accuracy of the same masked sentences read three ways, and the retrieval utility.

    Args:
        model ([`RealmForPreTraining`]): Run in eval mode (its mode is restored).
        batches (`Sequence[dict]`): Collated batches from [`DataCollatorForRealmPreTraining`] with `doc_ids` (the
            document each sentence comes from). Collate them once, so that every call masks the same spans.
        retriever ([`RealmRetriever`], *optional*): Searched for the retrieved reading (the model's own is restored
            after); defaults to the model's own.

    Returns:
        `dict[str, float]`:

        - `masked_lm_accuracy_no_document`: the encoder reading the null document only (what it predicts alone);
        - `masked_lm_accuracy_own_document`: reading the first block of the sentence's own document (an upper
          bound: the span is in it, unless the sentence falls in a later block);
        - `masked_lm_accuracy_retrieved`: through the model's retrieval, the own document excluded as in
          pre-training (the marginal over the candidates);
        - `retrieval_utility`: the mean over the masked sentences of the marginal log-likelihood of the span through
          retrieval minus that with the null document (REALM's signal; 0 without a null document among the
          candidates);
        - `masked_tokens`: how many masked tokens were scored.
    """
    retriever = retriever if retriever is not None else model.retriever
    if retriever is None:
        raise ValueError("masked_lm_reading needs a retriever: pass one or set the model's.")
    in_service = model.retriever
    model.set_retriever(retriever)
    was_training = model.training
    model.eval()
    row_of_doc = first_blocks(retriever.index.corpus["doc_id"])
    correct = {"no_document": 0, "own_document": 0, "retrieved": 0}
    total = 0
    utility, utility_count = 0.0, 0
    try:
        for batch in batches:
            doc_ids = batch["doc_ids"]
            rows = batch["input_ids"].size(0)
            alone = read_with_documents(model, retriever, batch, np.full(rows, -1))
            own = read_with_documents(model, retriever, batch, rows_of_documents(row_of_doc, doc_ids.tolist()))
            retrieved = model(
                **{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels", "doc_ids")}
            )
            correct["no_document"] += int(alone.masked_lm_correct.sum())
            correct["own_document"] += int(own.masked_lm_correct.sum())
            correct["retrieved"] += int(retrieved.masked_lm_correct.sum())
            total += int(retrieved.masked_lm_correct.numel())
            if retrieved.retrieval_utility is not None:
                utility += float(retrieved.retrieval_utility) * rows
                utility_count += rows
    finally:
        model.train(was_training)
        model.set_retriever(in_service)
    metrics = {f"masked_lm_accuracy_{name}": value / max(total, 1) for name, value in correct.items()}
    metrics["retrieval_utility"] = utility / utility_count if utility_count else 0.0
    metrics["masked_tokens"] = total
    return metrics


def make_reading_evaluator(batches: Sequence[dict], prefix: str = "") -> Callable[[object, object, int], dict]:
    """`eval_fn(model, retriever, step)` for [`train_realm`]: [`masked_lm_reading`] of `batches` (collated once),
    with every key prefixed by `prefix`."""

    def evaluate(model, retriever, step: int) -> dict:
        return {prefix + key: value for key, value in masked_lm_reading(model, batches, retriever).items()}

    return evaluate


__all__ = ["first_blocks", "make_reading_evaluator", "masked_lm_reading", "read_with_documents", "rows_of_documents"]
