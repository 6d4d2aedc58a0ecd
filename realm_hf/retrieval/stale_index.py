"""Pre-training retrieval that survives a stale index: the index searched with its own query-tower snapshot, and an
over-retrieved set re-ranked by the live towers.

At scale the index is refreshed every few hundred steps at best, so the query tower that searches it has moved on from
the document tower that embedded it. Searching a stale index with the live query tower compares vectors of two
different encoders; on realm_hf's generated world it undoes what REALM pre-training teaches (README, "Pre-training
with a stale index"). The anchors correct it three ways; [`StaleIndexRetriever`] implements the two that keep the
document tower training (the third, query-side training, freezes the document tower so that the index is never stale:
`RealmPreTrainingArguments.retriever_training="query_side"`):

- **snapshot search** (REALM's own code): the index is searched with a frozen copy of the query tower taken when the
  index's document embeddings were computed, so that both sides of the search come from the same weights; the
  candidates are then re-embedded and scored by the live towers in the model's forward, as always;
- **over-retrieve and re-rank** (Atlas' `--retrieve_with_rerank`): `rerank_candidates` blocks are retrieved from the
  stale index, re-embedded by the live document tower (without gradient) and scored against the live query; the best
  `num_candidates` go on to the model's forward.

Both combine with any refresh (synchronous, asynchronous or an external builder): [`IndexRefresher`] swaps in the
snapshot of each new index along with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .formats import pad_pairs
from .retriever import RealmRetriever, _as_numpy


class StaleIndexRetriever(RealmRetriever):
    r"""
    A [`RealmRetriever`] whose pre-training retrieval tolerates an index older than the towers: everything but
    [`~StaleIndexRetriever.retrieve_for_pretraining`] (open-QA retrieval, input building, saving) is
    [`RealmRetriever`]'s.

    Args:
        index ([`RealmIndex`]): The (possibly stale) knowledge index.
        tokenizer: The tokenizer of the corpus.
        search_query_tower (`torch.nn.Module`, *optional*): A frozen snapshot of the query tower taken when the index
            was embedded; when given, the index is searched with its embeddings of the masked sentences instead of the
            live query embeddings. [`IndexRefresher`] replaces it with each index it swaps in.
        document_tower (`torch.nn.Module`, *optional*): The live document tower, which re-embeds the over-retrieved
            blocks; required with `rerank_candidates`.
        rerank_candidates (`int`, *optional*, defaults to 0): Blocks retrieved per sentence from the index before the
            live towers keep the best `num_candidates`; 0 does not re-rank.
        rerank_batch_size (`int`, *optional*, defaults to 256): Blocks per forward pass of the re-embedding.
    """

    def __init__(
        self,
        index,
        tokenizer,
        *,
        search_query_tower: torch.nn.Module | None = None,
        document_tower: torch.nn.Module | None = None,
        rerank_candidates: int = 0,
        rerank_batch_size: int = 256,
    ):
        if rerank_candidates < 0:
            raise ValueError(f"rerank_candidates must be >= 0, got {rerank_candidates}.")
        if rerank_candidates and document_tower is None:
            raise ValueError("Re-ranking (rerank_candidates > 0) needs the live document tower (`document_tower`).")
        super().__init__(index, tokenizer)
        self.search_query_tower = search_query_tower
        self.document_tower = document_tower
        self.rerank_candidates = rerank_candidates
        self.rerank_batch_size = rerank_batch_size

    def pretraining_candidates(
        self,
        query_embeddings: torch.Tensor | np.ndarray,
        query_token_ids: Sequence[Sequence[int]],
        num_retrieve: int,
        exclude_doc_ids: torch.Tensor | Sequence[int] | None = None,
        max_block_length: int = 288,
    ) -> np.ndarray:
        r"""
        [`RealmRetriever.pretraining_candidates`], searching with the snapshot query tower (if any) and re-ranking
        an over-retrieved set with the live towers (if `rerank_candidates`). Same arguments and output.
        """
        live = _as_tensor(query_embeddings)
        search = live if self.search_query_tower is None else self.snapshot_query_embeddings(query_token_ids)
        pool = max(num_retrieve, min(self.rerank_candidates, len(self.index)))  # a small corpus holds fewer
        block_ids = self.search_excluding(_as_numpy(search), pool, exclude_doc_ids)
        if self.rerank_candidates and block_ids.shape[1] > num_retrieve:
            block_ids = self.rerank(live, block_ids, num_retrieve, max_block_length)
        return block_ids

    @torch.no_grad()
    def snapshot_query_embeddings(self, query_token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Embeddings of the masked sentences (`[CLS] x [SEP]`, rebuilt from their token ids) by the snapshot query
        tower, shape `(batch, dim)`."""
        tower = self.search_query_tower
        rows = [([self.cls_token_id, *ids, self.sep_token_id], len(ids) + 2) for ids in query_token_ids]
        inputs = pad_pairs(rows, self.pad_token_id)
        device = next(tower.parameters()).device
        was_training = tower.training
        tower.eval()
        try:
            return tower(**{k: v.to(device) for k, v in inputs.items()}, return_dict=True).projected_score.float()
        finally:
            tower.train(was_training)

    @torch.no_grad()
    def rerank(
        self, query_embeddings: torch.Tensor, block_ids: np.ndarray, keep: int, max_block_length: int = 288
    ) -> np.ndarray:
        """Keeps the `keep` blocks of each row of `block_ids` that score highest against `query_embeddings` once
        re-embedded by the live document tower (no gradient, eval mode; each distinct block embedded once), best
        first."""
        unique, inverse = np.unique(block_ids, return_inverse=True)
        tower = self.document_tower
        device = next(tower.parameters()).device
        was_training = tower.training
        tower.eval()
        try:
            parts = []
            for start in range(0, len(unique), self.rerank_batch_size):
                inputs = self.document_inputs(unique[start : start + self.rerank_batch_size], max_block_length)
                parts.append(tower(**{k: v.to(device) for k, v in inputs.items()}, return_dict=True).projected_score)
        finally:
            tower.train(was_training)
        embeddings = torch.cat(parts).float().cpu()
        candidates = embeddings[torch.from_numpy(inverse.reshape(block_ids.shape))]
        scores = torch.einsum("bd,bkd->bk", query_embeddings.detach().float().cpu(), candidates)
        order = scores.topk(keep, dim=-1).indices.numpy()
        return np.take_along_axis(block_ids, order, axis=1)


def _as_tensor(embeddings: torch.Tensor | np.ndarray) -> torch.Tensor:
    return embeddings if torch.is_tensor(embeddings) else torch.from_numpy(np.asarray(embeddings, dtype=np.float32))


__all__ = ["StaleIndexRetriever"]
