"""The interfaces between the models, the retriever and the index.

The call direction is model -> retriever -> index: [`RealmForOpenQA`] and [`RealmForPreTraining`] hold a
[`Retriever`] and call it with query embeddings; the retriever searches an [`Index`] and turns block ids into model
inputs. [`RealmRetriever`] over [`RealmIndex`] implements both; another index (a sharded one, a remote service)
only has to implement [`Index`] for the retriever, the models and evaluation to work with it unchanged.

Both are `typing.Protocol`s: nothing has to inherit from them, and `isinstance` checks that the methods exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable


if TYPE_CHECKING:
    import datasets
    import numpy as np
    import torch


@runtime_checkable
class Index(Protocol):
    """A searchable knowledge corpus: block embeddings, their maximum-inner-product search, and the blocks as data.

    Row `i` of `corpus` is block `i`; its embedding is row `i` of what `get_embeddings` returns.
    """

    @property
    def corpus(self) -> datasets.Dataset:
        """The blocks, one row per block id (with a `token_ids` column for the retriever)."""

    @property
    def embedding_dim(self) -> int:
        """The dimension of the block and query embeddings."""

    def __len__(self) -> int:
        """The number of blocks."""

    def search(self, query_embeddings: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` blocks of largest inner product with each query: float32 `scores` and int64 `ids`, shape
        `(num_queries, k)`, by decreasing score."""

    def get_embeddings(self, ids: np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
        """The exact embeddings of blocks, shape `(*ids.shape, embedding_dim)`."""


@runtime_checkable
class RefreshableIndex(Index, Protocol):
    """An [`Index`] with the lifecycle training needs: re-embedded by a document tower, saved, loaded, and whether
    its operations are collective. [`RealmIndex`] and [`ShardedRealmIndex`] implement it; the index refresh, the
    training loops and the loader ([`~realm_hf.retrieval.loading.load_index`]) use only this contract.
    """

    #: `True` when every process must call `search`, `get_embeddings`, `refresh_from` and `save_pretrained` at the
    #: same time (each process then holds and saves its own part).
    is_collective: bool

    def refresh_from(
        self, embedder: torch.nn.Module, tokenizer: Any, batch_size: int = 128, accelerator: Any = None,
        show_progress: bool = False,
    ) -> RefreshableIndex:  # fmt: skip
        """A new index over the same corpus, re-embedded by the document tower `embedder` (split over the
        processes of `accelerator` where the index is not collective); the index itself is unchanged."""

    def save_pretrained(self, save_directory: Any) -> None:
        """Saves the index atomically (collective where `is_collective`)."""

    @classmethod
    def from_pretrained(cls, directory: Any) -> RefreshableIndex:
        """Loads an index saved by `save_pretrained` (a plain or a sharded one)."""


@runtime_checkable
class Retriever(Protocol):
    """What the models call: retrieval for open-QA (`__call__`) and for masked-LM pre-training."""

    index: Index

    def __call__(
        self,
        query_embeddings: torch.Tensor | np.ndarray,
        question_input_ids: torch.Tensor | Sequence[Sequence[int]],
        question_attention_mask: torch.Tensor | None = None,
        answer_ids: list[list[list[int]]] | None = None,
        num_retrieved: int = 5,
        num_read: int | None = None,
        max_length: int = 320,
        gold_doc_ids: Sequence[Sequence[int]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The top `num_retrieved` blocks of each question and the reader inputs of the first `num_read` (with
        `gold_doc_ids`, also `is_gold`: which retrieved blocks come from a gold document)."""

    def question_token_ids(
        self, question_input_ids: torch.Tensor | Sequence[Sequence[int]], attention_mask: torch.Tensor | None = None
    ) -> list[list[int]]:
        """Question token ids without special tokens and padding."""

    def retrieve_for_pretraining(
        self,
        query_embeddings: torch.Tensor | np.ndarray,
        query_token_ids: Sequence[Sequence[int]],
        exclude_doc_ids: torch.Tensor | Sequence[int] | None = None,
        num_candidates: int = 8,
        null_document: bool = True,
        max_block_length: int = 288,
    ) -> dict[str, Any]:
        """Candidates of masked sentences: document-tower inputs, joint inputs and `retrieved_block_ids`."""
