"""How REALM pre-training retrieves while the index is stale: which towers train, and how the index is searched.

Three strategies from the anchors, each a documented option of [`RealmPreTrainingArguments`] (and of
`realm-hf pretrain`); [`apply_retrieval_strategy`] is the one place that sets them up, for [`train_realm`] and for
the Hugging Face `Trainer` path ([`~realm_hf.training.callbacks.IndexRefreshCallback`]):

- `retriever_training="query_side"` (Atlas' `--query_side_retriever_training`, RA-DIT): the towers are untied and
  the document tower is frozen, so the index built once is never stale and no refresh is needed;
- `index_search="snapshot"` (REALM's own code): the index is searched with the query tower of the weights that
  embedded it; the candidates are scored by the live towers;
- `rerank_candidates=L` (Atlas' `--retrieve_with_rerank`): L candidates are retrieved from the index and re-embedded
  by the live document tower, which keeps the best.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..retrieval.stale_index import StaleIndexRetriever


RETRIEVER_TRAINING = ("both", "query_side")
INDEX_SEARCH = ("auto", "snapshot", "live")
# Over-retrieved candidates re-ranked by default where the index goes stale: at a million documents re-ranking 64 is
# what learns retrieval with an index refreshed every few hundred steps or never (benchmarks/README.md).
DEFAULT_RERANK_CANDIDATES = 64


def resolve_index_search(retriever_training: str, index_search: str) -> str:
    """`index_search="auto"`: `"snapshot"` when both towers train, `"live"` with query-side training (the document
    tower is frozen, so the live query tower and the index always match)."""
    if index_search != "auto":
        return index_search
    return "live" if retriever_training == "query_side" else "snapshot"


def resolve_rerank_candidates(retriever_training: str, index_refresh_steps: int, rerank_candidates: int | None) -> int:
    """`rerank_candidates=None` (auto): [`DEFAULT_RERANK_CANDIDATES`] when both towers train and the index goes stale
    (refreshed less often than every step, or never); 0 with query-side training (the index is never stale) or an
    index re-embedded after every step (nothing to correct)."""
    if rerank_candidates is not None:
        return rerank_candidates
    if retriever_training == "query_side" or index_refresh_steps == 1:
        return 0
    return DEFAULT_RERANK_CANDIDATES


def check_retrieval_strategy(retriever_training: str, index_search: str, rerank_candidates: int) -> None:
    """Refuses an unknown or contradictory combination of the strategy options, naming it."""
    if retriever_training not in RETRIEVER_TRAINING:
        raise ValueError(f"retriever_training must be one of {RETRIEVER_TRAINING}, got {retriever_training!r}.")
    if index_search not in INDEX_SEARCH:
        raise ValueError(f"index_search must be one of {INDEX_SEARCH}, got {index_search!r}.")
    if rerank_candidates < 0:
        raise ValueError(f"rerank_candidates must be >= 0 (0: no re-ranking), got {rerank_candidates}.")
    if retriever_training == "query_side" and (resolve_index_search(retriever_training, index_search) != "live"
                                               or rerank_candidates):  # fmt: skip
        raise ValueError(
            "retriever_training='query_side' freezes the document tower, so the index is never stale: "
            "index_search='snapshot' and rerank_candidates have nothing to correct (use index_search='auto' or 'live', and "
            "rerank_candidates=0)."
        )


@dataclass
class RetrievalStrategy:
    """What [`apply_retrieval_strategy`] set up.

    Attributes:
        retriever: The retriever to give the model (the one passed, or a [`StaleIndexRetriever`] around it).
        snapshot_query_tower (`torch.nn.Module` or `None`): The live query tower whose snapshots search the index
            (pass it to [`IndexRefresher`] as `query_tower`); `None` without snapshot search.
        document_tower_trains (`bool`): Whether the document tower trains (if not, the index never goes stale and
            is never refreshed).
    """

    retriever: object
    snapshot_query_tower: torch.nn.Module | None
    document_tower_trains: bool


def apply_retrieval_strategy(
    model, retriever, retriever_training: str = "both", index_search: str = "auto", rerank_candidates: int = 0
) -> RetrievalStrategy:
    r"""
    Sets up a [`RealmForPreTraining`] and its retriever for a pre-training strategy, before the optimizer is made.

    Args:
        model ([`RealmForPreTraining`]): With `retriever_training="query_side"`, its query tower is untied
            ([`~RealmForPreTraining.untie_query_embedder`]) and its document tower frozen here.
        retriever ([`RealmRetriever`]): The retriever over the index built with the model's document tower.
        retriever_training (`str`): `"both"` (both towers train) or `"query_side"`.
        index_search (`str`): `"snapshot"` (the query tower of the index's own weights searches it), `"live"` (the
            query tower in training does) or `"auto"` (snapshot, or live with query-side training).
        rerank_candidates (`int`): Candidates to over-retrieve and re-rank with the live towers (0: none).

    Returns:
        [`RetrievalStrategy`]
    """
    check_retrieval_strategy(retriever_training, index_search, rerank_candidates)
    index_search = resolve_index_search(retriever_training, index_search)
    if retriever_training == "query_side":
        model.untie_query_embedder()
        model.embedder.requires_grad_(False)
    if index_search == "snapshot" or rerank_candidates:
        retriever = StaleIndexRetriever(
            retriever.index,
            retriever.tokenizer,
            document_tower=model.embedder if rerank_candidates else None,
            rerank_candidates=rerank_candidates,
        )
    return RetrievalStrategy(
        retriever=retriever,
        snapshot_query_tower=model.query_embedder if index_search == "snapshot" else None,
        document_tower_trains=any(p.requires_grad for p in model.embedder.parameters()),
    )


__all__ = [
    "DEFAULT_RERANK_CANDIDATES",
    "INDEX_SEARCH",
    "RETRIEVER_TRAINING",
    "RetrievalStrategy",
    "apply_retrieval_strategy",
    "check_retrieval_strategy",
    "resolve_index_search",
    "resolve_rerank_candidates",
]
