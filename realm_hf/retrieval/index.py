"""`RealmIndex`: a knowledge corpus (`datasets.Dataset`), its block embeddings and a FAISS MIPS index.

Design notes (the measurements behind them are in `benchmarks/README.md`, "Design measurements of the index"):

* **Search** (exact brute force and FAISS) lives in `search`; the FAISS object is managed here instead of being
  attached to the corpus with `datasets.Dataset.add_faiss_index`, which defaults to L2.
* **Embeddings** are stored once, as `embeddings.npy`, and loaded with `np.load(mmap_mode="r")`: a 13.35M x 128
  float32 corpus then lives in the page cache, not twice in process memory. `get_embeddings` and the
  `refine_factor` re-scoring read exact vectors from it even when the FAISS index is compressed (PQ/SQ).
* **Flat (exact) indexes store no `index.faiss`**: exact search runs directly on the (memory-mapped) embeddings.
* **Other indexes** are written with `faiss.write_index` and read back with
  `faiss.read_index(path, IO_FLAG_MMAP_IFC | IO_FLAG_READ_ONLY)`. With faiss 1.15.1 this memory-maps the codes of
  `IndexFlatCodes` descendants (PQ, SQ), the storage of HNSW indexes (the graph itself is read into memory) and the
  inverted lists of IVF indexes, so loading a large index barely raises the resident memory. (The older
  `IO_FLAG_MMAP` only maps IVF inverted lists and fails when combined with `IO_FLAG_MMAP_IFC`.) FAISS still checks
  the file length while reading, so a truncated file raises instead of faulting later.
* **No pickle anywhere.** The corpus is written with `Dataset.save_to_disk` (Arrow), the config as JSON.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from huggingface_hub import CommitInfo

from ..file_utils import atomic_directory
from ..logging import get_logger
from ..version import __version__
from .corpus import tokenize_blocks
from .embedding import embed_corpus
from .fingerprint import compute_embedder_fingerprint
from .index_format import (
    FAISS_INDEX_NAME,
    INDEX_CONFIG_NAME,
    INDEX_FILE_PATTERNS,
    SHARDED_INDEX_MANIFEST,
    RealmIndexConfig,
    check_file_sizes,
    check_loaded,
    check_replaceable,
    read_corpus,
    read_embeddings,
    read_faiss_index,
    read_sharded_manifest,
    safe_join,
    write_corpus,
    write_embeddings,
    write_faiss_index,
)
from .legacy import legacy_corpus, load_legacy_block_records
from .search import (
    as_float32_matrix,
    build_faiss_index,
    check_faiss_index,
    check_index_factory,
    default_search_parameters,
    exact_top_k,
    faiss_top_k,
    import_faiss,
    is_flat,
    set_search_parameters,
)
from .storage import check_upload_target, resolve_directory, upload_folder


logger = get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Index
# ----------------------------------------------------------------------------------------------------------------


class RealmIndex:
    """A REALM knowledge corpus with its block embeddings and a FAISS maximum-inner-product index.

    Build one with [`RealmIndex.build`] (or [`RealmIndex.from_legacy`] for an old transformers REALM
    `block_records.npy`), search it with [`RealmIndex.search`], save it with [`RealmIndex.save_pretrained`] and load
    it with [`RealmIndex.from_pretrained`]. After the embedder has been trained, [`RealmIndex.refresh`] returns a new
    index over the same corpus.

    Args:
        corpus (`datasets.Dataset`):
            One row per block (row index = block id), typically from [`split_documents_into_blocks`]. It must not
            have `datasets` search indexes attached.
        embeddings (`np.ndarray` of shape `(num_blocks, dim)`, float32):
            Block embeddings (may be a read-only memory map; it is not copied).
        faiss_index (`faiss.Index`, *optional*):
            The FAISS index over `embeddings`; `None` when `config.index_factory == "Flat"`.
        config ([`RealmIndexConfig`]):
            The index description.

    Example:

    ```python
    >>> import numpy as np
    >>> from datasets import Dataset
    >>> from realm_hf.retrieval.index import RealmIndex

    >>> corpus = Dataset.from_dict({"title": ["a", "b", "c"], "text": ["x", "y", "z"]})
    >>> embeddings = np.eye(3, 4, dtype=np.float32)
    >>> index = RealmIndex.build(corpus, embeddings, show_progress=False)
    >>> scores, ids = index.search(np.array([[0.0, 1.0, 0.0, 0.0]], dtype=np.float32), k=2)
    >>> ids[0, 0]
    np.int64(1)

    ```
    """

    #: Search, refresh and save are local to this process (a sharded index's are collective).
    is_collective = False

    def __init__(
        self,
        corpus: datasets.Dataset,
        embeddings: np.ndarray,
        faiss_index: Any | None,
        config: RealmIndexConfig,
    ) -> None:
        _check_corpus(corpus)
        if (
            corpus._indices is not None
        ):  # shuffled/filtered/selected: row i must be the table's row i (zero-copy reads)
            corpus = corpus.flatten_indices()
        _check_embedding_matrix(embeddings, name="embeddings")
        if embeddings.dtype != np.float32:
            raise ValueError(f"`embeddings` must be float32, got {embeddings.dtype}.")
        num_blocks, dim = embeddings.shape
        if len(corpus) != num_blocks:
            raise ValueError(f"The corpus has {len(corpus)} rows but there are {num_blocks} embeddings.")
        if (config.num_blocks, config.dim) != (num_blocks, dim):
            raise ValueError(
                f"The config describes {config.num_blocks} blocks of dim {config.dim}, but the embeddings have "
                f"shape {embeddings.shape}."
            )
        if faiss_index is not None:
            check_faiss_index(faiss_index, num_blocks, dim, name="faiss_index")
        elif not is_flat(config.index_factory):
            raise ValueError(f"A FAISS index is required for index_factory={config.index_factory!r}.")
        self._corpus = corpus
        self._embeddings = embeddings
        self._faiss_index = faiss_index
        self.config = config
        self._apply_search_parameters()

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        corpus: datasets.Dataset | None,
        embeddings: np.ndarray | torch.Tensor,
        index_factory: str = "Flat",
        train_size: int | None = None,
        nprobe: int | None = None,
        hnsw_ef_search: int | None = None,
        refine_factor: int | None = None,
        embedder_fingerprint: str | None = None,
        batch_size: int = 65536,
        show_progress: bool = True,
        seed: int = 0,
    ) -> RealmIndex:
        """Build an index over `embeddings` (row `i` embeds block `i` of `corpus`).

        Args:
            corpus (`datasets.Dataset`, *optional*):
                The blocks. `None` creates a bare vector index whose corpus has a single `block_id` column.
            embeddings (`np.ndarray` or `torch.Tensor` of shape `(num_blocks, dim)`):
                Block embeddings; converted to float32 (a C-contiguous float32 array is used without copying).
                NaN or infinite values are rejected.
            index_factory (`str`, *optional*, defaults to `"Flat"`):
                A `faiss.index_factory` string built with `METRIC_INNER_PRODUCT`: `"Flat"` (exact), `"IVF4096,Flat"`,
                `"HNSW32"`, `"IVF4096,PQ32"`, `"IVF16384_HNSW32,PQ32"`, ...
            train_size (`int`, *optional*):
                Number of randomly sampled embeddings used to train indexes that need training (IVF, PQ, SQ).
                Defaults to `max(65536, 50 * nlist)`, capped at `num_blocks`.
            nprobe (`int`, *optional*):
                Inverted lists visited per query (IVF). Defaults to `round(sqrt(nlist))`.
            hnsw_ef_search (`int`, *optional*):
                HNSW `efSearch`. Defaults to 128.
            refine_factor (`int`, *optional*):
                For approximate indexes: fetch `refine_factor * k` candidates and re-rank them with exact scores.
            embedder_fingerprint (`str`, *optional*):
                [`compute_embedder_fingerprint`] of the embedder, recorded for [`check_embedder`].
            batch_size (`int`, *optional*, defaults to 65536):
                Vectors added to FAISS per call (progress-bar granularity).
            show_progress (`bool`, *optional*, defaults to `True`):
                Show a tqdm progress bar while adding vectors.
            seed (`int`, *optional*, defaults to 0):
                Seed of the training sample.

        Returns:
            [`RealmIndex`]
        """
        embeddings = as_float32_matrix(embeddings, name="embeddings")
        _check_finite(embeddings, name="embeddings")
        num_blocks, dim = embeddings.shape
        if corpus is None:
            corpus = datasets.Dataset.from_dict({"block_id": np.arange(num_blocks, dtype=np.int64)})
        _check_corpus(corpus)
        if len(corpus) != num_blocks:
            raise ValueError(f"The corpus has {len(corpus)} rows but `embeddings` has {num_blocks} rows.")
        if refine_factor is not None and refine_factor < 1:
            raise ValueError(f"`refine_factor` must be >= 1, got {refine_factor}.")
        faiss_index = None
        if not is_flat(index_factory):
            faiss_index = build_faiss_index(
                embeddings,
                index_factory,
                train_size=train_size,
                batch_size=batch_size,
                show_progress=show_progress,
                seed=seed,
            )
            nprobe, hnsw_ef_search = default_search_parameters(faiss_index, nprobe, hnsw_ef_search)
        config = RealmIndexConfig(
            dim=dim,
            num_blocks=num_blocks,
            index_factory=index_factory,
            nprobe=nprobe,
            hnsw_ef_search=hnsw_ef_search,
            refine_factor=refine_factor,
            embedder_fingerprint=embedder_fingerprint,
            index_file=None if faiss_index is None else FAISS_INDEX_NAME,
        )
        return cls(corpus, embeddings, faiss_index, config)

    def refresh(
        self,
        new_embeddings: np.ndarray | torch.Tensor,
        embedder_fingerprint: str | None = None,
        train_size: int | None = None,
        show_progress: bool = True,
        seed: int = 0,
    ) -> RealmIndex:
        """Return a new index over the same corpus with `new_embeddings` (the REALM index refresh).

        The FAISS index is rebuilt (and retrained) from scratch with the same factory string and search parameters;
        `self` is left unchanged.

        Args:
            new_embeddings (`np.ndarray` or `torch.Tensor` of shape `(num_blocks, dim)`):
                Embeddings of the same blocks by the updated embedder.
            embedder_fingerprint (`str`, *optional*):
                Fingerprint of the updated embedder.
            train_size (`int`, *optional*):
                See [`RealmIndex.build`].
            show_progress (`bool`, *optional*, defaults to `True`):
                Show a progress bar.
            seed (`int`, *optional*, defaults to 0):
                Seed of the training sample.

        Returns:
            [`RealmIndex`]
        """
        rows = new_embeddings.shape[0] if getattr(new_embeddings, "ndim", 0) >= 1 else None
        if rows != len(self):
            raise ValueError(f"`new_embeddings` has {rows} rows but the corpus has {len(self)} blocks.")
        return type(self).build(
            self._corpus,
            new_embeddings,
            index_factory=self.config.index_factory,
            train_size=train_size,
            nprobe=self.config.nprobe,
            hnsw_ef_search=self.config.hnsw_ef_search,
            refine_factor=self.config.refine_factor,
            embedder_fingerprint=embedder_fingerprint,
            show_progress=show_progress,
            seed=seed,
        )

    def build_like(
        self,
        corpus: datasets.Dataset,
        embeddings: np.ndarray | torch.Tensor,
        embedder_fingerprint: str | None = None,
        show_progress: bool = False,
    ) -> RealmIndex:
        """An index over `corpus` with `embeddings`, built and searched as this one is (factory string, search
        parameters) and recording `embedder_fingerprint` (by default this index's)."""
        return type(self).build(
            corpus,
            embeddings,
            index_factory=self.config.index_factory,
            nprobe=self.config.nprobe,
            hnsw_ef_search=self.config.hnsw_ef_search,
            refine_factor=self.config.refine_factor,
            embedder_fingerprint=embedder_fingerprint or self.config.embedder_fingerprint,
            show_progress=show_progress,
        )

    def refresh_from(
        self,
        embedder: torch.nn.Module,
        tokenizer,
        batch_size: int = 128,
        accelerator=None,
        show_progress: bool = False,
    ) -> RealmIndex:
        """The REALM index refresh: re-embeds the corpus with the document tower `embedder` (split over the
        Accelerate processes of `accelerator`, if given; every process gets the whole result) and returns a new
        index over the same corpus, built as this one is and recording the embedder's fingerprint. `self` is
        unchanged."""
        embeddings = embed_corpus(
            embedder,
            self._corpus,
            tokenizer,
            batch_size=batch_size,
            accelerator=accelerator,
            show_progress=show_progress,
        )
        return self.refresh(
            embeddings, embedder_fingerprint=compute_embedder_fingerprint(embedder), show_progress=False
        )

    @classmethod
    def from_legacy(
        cls,
        block_records_path: str | os.PathLike,
        block_emb: np.ndarray | torch.Tensor,
        tokenizer: Any,
        allow_pickle: bool = False,
        titles: Sequence[str] | None = None,
        num_proc: int | None = None,
        index_factory: str = "Flat",
        **build_kwargs: Any,
    ) -> RealmIndex:
        """Import the corpus of the old transformers REALM (`block_records.npy` + the `block_emb` buffer).

        `block_records.npy` is a 1-D numpy object array of UTF-8 `bytes` written with `np.save`, i.e. a **pickle**:
        loading it can execute arbitrary code. It is only read when `allow_pickle=True`. Convert it once and keep the
        pickle-free result of [`save_pretrained`].

        Args:
            block_records_path (`str` or `os.PathLike`):
                Path of `block_records.npy`.
            block_emb (`np.ndarray` or `torch.Tensor` of shape `(num_blocks, dim)`):
                The block embeddings (the `block_emb` buffer of `RealmForOpenQA` / the ORQA `encoded.ckpt`).
            tokenizer ([`PreTrainedTokenizerBase`]):
                The BERT tokenizer used to pre-tokenize the blocks into `token_ids`.
            allow_pickle (`bool`, *optional*, defaults to `False`):
                Explicit opt-in to unpickle `block_records.npy`. Only do this for files you trust.
            titles (`Sequence[str]`, *optional*):
                One title per block; the legacy blocks have none, so titles default to empty strings.
            num_proc (`int`, *optional*):
                Processes for tokenization.
            index_factory (`str`, *optional*, defaults to `"Flat"`):
                See [`RealmIndex.build`].
            build_kwargs:
                Further arguments for [`RealmIndex.build`].

        Returns:
            [`RealmIndex`]
        """

        records = load_legacy_block_records(block_records_path, allow_pickle=allow_pickle)
        num_emb = block_emb.shape[0] if getattr(block_emb, "ndim", 0) >= 1 else None
        if len(records) != num_emb:
            raise ValueError(
                f"{block_records_path} holds {len(records)} blocks but `block_emb` has {num_emb} rows; they must match."
            )
        corpus = legacy_corpus(records, tokenizer, titles=titles, num_proc=num_proc, source=block_records_path)
        del records
        return cls.build(corpus, block_emb, index_factory=index_factory, **build_kwargs)

    # -- properties --------------------------------------------------------------------------------------------

    @classmethod
    def from_dataset(
        cls,
        dataset: datasets.Dataset,
        tokenizer: Any | None = None,
        embeddings_column: str = "embeddings",
        **build_kwargs: Any,
    ) -> RealmIndex:
        r"""
        An index over a `datasets.Dataset` of blocks that already carries their embeddings, as the knowledge datasets
        of transformers' RAG examples do: an `embeddings_column`, or else a FAISS index attached to the dataset
        (`add_faiss_index` or `add_faiss_index_from_external_arrays`), whose vectors are read back. The vectors are
        indexed for inner-product search (whatever metric the attached index used) with `build_kwargs`.

        Args:
            dataset (`datasets.Dataset`): One block per row (`title`, `text`, ...).
            tokenizer (`PreTrainedTokenizerBase`, *optional*): Tokenizes the blocks (`tokenize_blocks`) when the
                dataset has no `token_ids` column yet; a retriever needs them.
            embeddings_column (`str`, *optional*, defaults to `"embeddings"`): The column, or the name of the
                attached FAISS index, that holds the vectors.
            build_kwargs: Passed to [`RealmIndex.build`] (`index_factory`, `nprobe`, `show_progress`, ...).

        Raises:
            `ValueError`: if the dataset has neither the column nor an index of that name.
        """
        attached = list(dataset.list_indexes())
        if embeddings_column in dataset.column_names:
            embeddings = np.asarray(dataset.with_format("numpy")[embeddings_column], dtype=np.float32)
        elif embeddings_column in attached:
            faiss_index = dataset.get_index(embeddings_column).faiss_index
            embeddings = faiss_index.reconstruct_n(0, faiss_index.ntotal)
        else:
            raise ValueError(
                f"The dataset has no {embeddings_column!r} column and no FAISS index of that name (columns: "
                f"{dataset.column_names}, indexes: {attached})."
            )
        corpus = _without_search_indexes(dataset)
        if embeddings_column in corpus.column_names:
            corpus = corpus.remove_columns(embeddings_column)
        if "token_ids" not in corpus.column_names and tokenizer is not None:
            corpus = tokenize_blocks(corpus, tokenizer)
        return cls.build(corpus, embeddings, **build_kwargs)

    def as_dataset(self, index_name: str = "embeddings") -> datasets.Dataset:
        r"""
        The corpus as a `datasets.Dataset` with an exact inner-product FAISS index over the embeddings attached as
        `index_name`, so that `dataset.get_nearest_examples(index_name, query, k)` finds what [`RealmIndex.search`]
        finds. The FAISS index is a new in-memory copy of the embeddings.
        """
        faiss = import_faiss()
        dataset = _without_search_indexes(self.corpus)  # attaching an index to it leaves `self.corpus` as it is
        dataset.add_faiss_index_from_external_arrays(
            external_arrays=np.ascontiguousarray(self.embeddings, dtype=np.float32),
            index_name=index_name,
            metric_type=faiss.METRIC_INNER_PRODUCT,
        )
        return dataset

    def __len__(self) -> int:
        return self.config.num_blocks

    def __repr__(self) -> str:
        return (
            f"RealmIndex(num_blocks={len(self)}, embedding_dim={self.embedding_dim}, "
            f"index_factory={self.config.index_factory!r}, columns={self._corpus.column_names})"
        )

    @property
    def embedding_dim(self) -> int:
        """`int`: dimension of the block embeddings."""
        return self.config.dim

    @property
    def corpus(self) -> datasets.Dataset:
        """`datasets.Dataset`: the blocks (row index = block id)."""
        return self._corpus

    @property
    def embeddings(self) -> np.ndarray:
        """`np.ndarray` of shape `(num_blocks, dim)`: the float32 block embeddings (possibly a read-only memmap)."""
        return self._embeddings

    @property
    def faiss_index(self) -> Any | None:
        """The `faiss.Index`, or `None` for `"Flat"` indexes (exact search over [`embeddings`])."""
        return self._faiss_index

    @property
    def is_exact(self) -> bool:
        """`bool`: whether [`search`] is exact (a `"Flat"` index)."""
        return self._faiss_index is None

    # -- search ------------------------------------------------------------------------------------------------

    def set_search_parameters(
        self, nprobe: int | None = None, hnsw_ef_search: int | None = None, refine_factor: int | None = None
    ) -> None:
        """Change search-time parameters (a `None` argument keeps the current value).

        Args:
            nprobe (`int`, *optional*):
                Inverted lists visited per query (IVF indexes).
            hnsw_ef_search (`int`, *optional*):
                HNSW `efSearch`.
            refine_factor (`int`, *optional*):
                Candidates per result re-scored exactly (approximate indexes); 1 disables re-scoring.
        """
        if refine_factor is not None and refine_factor < 1:
            raise ValueError(f"`refine_factor` must be >= 1, got {refine_factor}.")
        for name, value in (("nprobe", nprobe), ("hnsw_ef_search", hnsw_ef_search), ("refine_factor", refine_factor)):
            if value is not None:
                setattr(self.config, name, int(value))
        self._apply_search_parameters()

    def search(
        self,
        query_embeddings: np.ndarray | torch.Tensor,
        k: int,
        batch_size: int = 4096,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maximum-inner-product search.

        Args:
            query_embeddings (`np.ndarray` or `torch.Tensor` of shape `(batch_size, dim)`):
                Query embeddings (converted to float32). NaN or infinite values are rejected.
            k (`int`):
                Number of blocks per query, `1 <= k <= len(self)`.
            batch_size (`int`, *optional*, defaults to 4096):
                Queries per FAISS call.
            exact (`bool`, *optional*, defaults to `False`):
                Use [`exact_search_torch`] (brute force `torch` matmul + `topk`, the old transformers REALM path)
                instead of the FAISS index.

        Returns:
            `tuple(np.ndarray, np.ndarray)`: `scores` (float32) and `ids` (int64), both of shape `(batch_size, k)`,
            sorted by decreasing score. Approximate indexes may return fewer than `k` hits for a query (for example
            IVF with a small `nprobe`); missing hits have id `-1` and score `-inf`, and a warning is logged.
        """
        if exact:
            return self.exact_search_torch(query_embeddings, k)
        queries = self._prepare_queries(query_embeddings, k)
        scores = np.empty((len(queries), k), dtype=np.float32)
        ids = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), batch_size):
            end = min(start + batch_size, len(queries))
            scores[start:end], ids[start:end] = self._search_batch(queries[start:end], k)
        missing = int((ids < 0).sum())
        if missing:
            logger.warning(
                "%d of %d requested hits are missing (id -1); increase nprobe / hnsw_ef_search.", missing, ids.size
            )
        return scores, ids

    def exact_search_torch(self, query_embeddings: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search with `torch`: `einsum("BD,QD->QB")` + `topk`, as the old transformers `RealmForOpenQA`.

        The blocks are processed in chunks (merged with a second `topk`) so the `[queries, blocks]` score matrix
        never exceeds 256 MB. Use it as an oracle for the FAISS paths.

        Args:
            query_embeddings (`np.ndarray` or `torch.Tensor` of shape `(batch_size, dim)`):
                Query embeddings.
            k (`int`):
                Number of blocks per query.

        Returns:
            `tuple(np.ndarray, np.ndarray)`: float32 `scores` and int64 `ids` of shape `(batch_size, k)`.
        """
        queries = self._prepare_queries(query_embeddings, k)
        scores, ids = exact_top_k(queries, self._embeddings, k, einsum=True)
        return scores.numpy().astype(np.float32, copy=False), ids.numpy().astype(np.int64, copy=False)

    # -- lookup ------------------------------------------------------------------------------------------------

    def get_embeddings(self, ids: np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
        """Exact embeddings of blocks.

        Args:
            ids (array-like of int, any shape):
                Block ids.

        Returns:
            `np.ndarray` of shape `ids.shape + (dim,)`, float32 (a copy).
        """
        flat, shape = self._check_ids(ids)
        return np.asarray(self._embeddings[flat]).reshape(*shape, self.embedding_dim)

    def get_blocks(
        self, ids: np.ndarray | torch.Tensor | Sequence[int] | int, columns: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Corpus rows of blocks.

        Args:
            ids (`int` or array-like of int):
                Block ids. For an array of shape `(B, k)` every column is a `B`-long list of `k`-long lists.
            columns (`Sequence[str]`, *optional*):
                Columns to return (all by default).

        Returns:
            `dict[str, Any]`: column name -> values, nested like `ids`.
        """
        flat, shape = self._check_ids(ids)
        corpus = self._corpus if columns is None else self._corpus.select_columns(list(columns))
        rows = corpus[flat.tolist()]
        return {name: _unflatten(list(values), shape) for name, values in rows.items()}

    # -- staleness ---------------------------------------------------------------------------------------------

    def require_embedder(
        self, embedder: torch.nn.Module, source: str | os.PathLike = "the index", allow_stale: bool = False
    ) -> None:
        """Refuses an index that another document tower built than `embedder` (a stale index: retrieval scores would
        not be the model's), naming both fingerprints; with `allow_stale` it only warns. An index that records no
        fingerprint (a legacy one) passes with a warning.

        Raises:
            `ValueError`: on a mismatch, unless `allow_stale`.
        """
        if self.check_embedder(embedder) or self.config.embedder_fingerprint is None:
            return  # its own tower's, or a legacy index (`check_embedder` warned that it cannot tell)
        message = (
            f"{source} was embedded by another document tower ({self.config.embedder_fingerprint}) than the model's "
            f"({compute_embedder_fingerprint(embedder)}): a stale index. Re-embed it with the model (`build_index`, "
            "`RealmIndex.refresh_from`), or pass allow_stale_index=True to use it anyway."
        )
        if not allow_stale:
            raise ValueError(message)  # with allow_stale, `check_embedder`'s warning names both fingerprints

    def check_embedder(self, model_or_fingerprint: torch.nn.Module | str, dim: int | None = None) -> bool:
        """Check that this index was built with (the current weights of) an embedder.

        Args:
            model_or_fingerprint (`torch.nn.Module` or `str`):
                The embedder, or its [`compute_embedder_fingerprint`].
            dim (`int`, *optional*):
                The embedder's output dimension. For a model it defaults to `model.config.retriever_proj_size` when
                that exists.

        Returns:
            `bool`: `True` if the fingerprints match. A mismatch (stale index) or an index without a recorded
            fingerprint logs a warning and returns `False`.

        Raises:
            `ValueError`: if `dim` differs from the index's embedding dimension.
        """
        if isinstance(model_or_fingerprint, torch.nn.Module):
            if dim is None:
                dim = getattr(getattr(model_or_fingerprint, "config", None), "retriever_proj_size", None)
            fingerprint = compute_embedder_fingerprint(model_or_fingerprint)
        elif isinstance(model_or_fingerprint, str):
            fingerprint = model_or_fingerprint
        else:
            raise TypeError(f"Expected a torch.nn.Module or a fingerprint string, got {type(model_or_fingerprint)}.")
        if dim is not None and int(dim) != self.embedding_dim:
            raise ValueError(
                f"The embedder produces {dim}-dimensional embeddings but the index has dim {self.embedding_dim}."
            )
        if self.config.embedder_fingerprint is None:
            logger.warning("This index records no embedder fingerprint; cannot tell whether it is stale.")
            return False
        if fingerprint != self.config.embedder_fingerprint:
            logger.warning(
                "Stale index: it was built with embedder %s but the current embedder is %s. Re-embed the corpus and "
                "call `RealmIndex.refresh`.",
                self.config.embedder_fingerprint,
                fingerprint,
            )
            return False
        return True

    # -- persistence -------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Save the index atomically to `save_directory`.

        Layout: `index_config.json` (relative file names only), `corpus/` (`Dataset.save_to_disk`),
        `embeddings.npy`, and `index.faiss` (not for `"Flat"`). Everything is written into a temporary sibling
        directory that then replaces `save_directory`; if writing fails, the temporary directory is removed and a
        previous index at `save_directory` is left as it was. An existing non-empty directory that is not a saved
        `RealmIndex` is never replaced.

        An index loaded (memory-mapped) from `save_directory` itself keeps reading the replaced files, which stay
        alive until it is garbage-collected; reload it to use the new files.

        Args:
            save_directory (`str` or `os.PathLike`):
                Target directory (upload it with `huggingface_hub.upload_folder(..., repo_type="dataset")`).
        """
        target = Path(save_directory).absolute()
        check_replaceable(target)
        with atomic_directory(target) as tmp:
            self._write_files(tmp)
        logger.info("Saved %r to %s.", self, target)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        repo_type: str = "dataset",
        card: str | None = None,
        commit_message: str = "Upload REALM index with realm_hf",
        commit_description: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        private: bool | None = None,
        token: str | bool | None = None,
    ) -> CommitInfo:
        r"""
        Uploads the index ([`save_pretrained`]'s files, at the repository root) in one commit, replacing a previous
        index's files; `RealmIndex.from_pretrained(repo_id)` loads it back.

        Args:
            repo_id (`str`): `"namespace/name"`.
            repo_type (`str`, *optional*, defaults to `"dataset"`): The repository type (`from_pretrained`'s default).
            card (`str`, *optional*): The README.md text (`realm_hf.hub.publish.push_index_to_hub` writes one).
            commit_message, commit_description, revision, create_pr, private, token: As for
                [`~realm_hf.retrieval.storage.upload_folder`].

        Returns:
            `huggingface_hub.CommitInfo`
        """
        repo_id, token = check_upload_target(repo_id, revision, create_pr, token)
        with tempfile.TemporaryDirectory(prefix="realm_hf-index-") as tmp:
            folder = Path(tmp) / "index"
            self.save_pretrained(folder)
            if card is not None:
                (folder / "README.md").write_text(card, encoding="utf-8")
            return upload_folder(
                folder, repo_id, repo_type=repo_type, delete_patterns=INDEX_FILE_PATTERNS,
                commit_message=commit_message, commit_description=commit_description, revision=revision,
                create_pr=create_pr, private=private, token=token,
            )  # fmt: skip

    def _write_files(self, directory: Path) -> None:
        config = dataclasses.replace(self.config, file_sizes={}, realm_hf_version=__version__)
        write_corpus(self._corpus, directory / config.corpus_dir)
        write_embeddings(self._embeddings, directory / config.embeddings_file)
        config.file_sizes[config.embeddings_file] = (directory / config.embeddings_file).stat().st_size
        if self._faiss_index is not None:
            config.index_file = FAISS_INDEX_NAME
            write_faiss_index(self._faiss_index, directory / config.index_file)
            config.file_sizes[config.index_file] = (directory / config.index_file).stat().st_size
        else:
            config.index_file = None
        # The config is written last: a directory with a config is a complete one.
        config.to_json_file(directory / INDEX_CONFIG_NAME)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_index_name_or_path: str | os.PathLike,
        revision: str | None = None,
        repo_type: str = "dataset",
        subfolder: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        mmap: bool = True,
    ) -> RealmIndex:
        """Load an index saved with [`save_pretrained`] from a local directory or a Hub repository.

        Args:
            pretrained_index_name_or_path (`str` or `os.PathLike`):
                A local directory, or a Hub repo id (downloaded with `huggingface_hub.snapshot_download`).
            revision (`str`, *optional*):
                Hub revision (branch, tag or commit).
            repo_type (`str`, *optional*, defaults to `"dataset"`):
                Hub repository type.
            subfolder (`str`, *optional*):
                Folder inside the directory or repository that holds the index.
            cache_dir (`str` or `os.PathLike`, *optional*):
                Hub cache directory.
            token (`str` or `bool`, *optional*):
                Hub token.
            local_files_only (`bool`, *optional*, defaults to `False`):
                Only use the local Hub cache.
            mmap (`bool`, *optional*, defaults to `True`):
                Memory-map `embeddings.npy` and `index.faiss` instead of reading them into memory.

        Returns:
            [`RealmIndex`]

        Raises:
            `ValueError`: naming the offending file if a file is missing, truncated, corrupt, or if row counts or
            dimensions disagree.
        """
        directory = resolve_directory(
            pretrained_index_name_or_path,
            repo_type=repo_type,
            subfolder=subfolder,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        if not (directory / INDEX_CONFIG_NAME).is_file() and (directory / SHARDED_INDEX_MANIFEST).is_file():
            # Saved by several processes: one index here (the FAISS index is rebuilt unless Flat).
            manifest, shards = read_shards(directory, mmap=mmap)
            corpus = datasets.concatenate_datasets([shard.corpus for shard in shards])
            embeddings = np.concatenate([shard.embeddings for shard in shards])
            return shards[0].build_like(corpus, embeddings)
        config = RealmIndexConfig.from_json_file(directory / INDEX_CONFIG_NAME)
        check_file_sizes(directory, config)
        corpus = read_corpus(safe_join(directory, config.corpus_dir))
        embeddings = read_embeddings(safe_join(directory, config.embeddings_file), mmap=mmap)
        faiss_index = None
        if config.index_file is not None:
            faiss_index = read_faiss_index(safe_join(directory, config.index_file), mmap=mmap)
        check_loaded(directory, config, corpus, embeddings, faiss_index)
        return cls(corpus, embeddings, faiss_index, config)

    # -- internals ---------------------------------------------------------------------------------------------

    def _apply_search_parameters(self) -> None:
        if self._faiss_index is not None:
            set_search_parameters(self._faiss_index, self.config.nprobe, self.config.hnsw_ef_search)

    def _prepare_queries(self, query_embeddings: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"`k` must be an int, got {type(k).__name__}.")
        if k < 1:
            raise ValueError(f"`k` must be >= 1, got k={k}.")
        if k > len(self):
            raise ValueError(f"k={k} is larger than the number of blocks in the index ({len(self)}).")
        queries = as_float32_matrix(query_embeddings, name="query_embeddings")
        if queries.shape[1] != self.embedding_dim:
            raise ValueError(
                f"`query_embeddings` has dim {queries.shape[1]} but the index has dim {self.embedding_dim}."
            )
        _check_finite(queries, name="query_embeddings")
        return queries

    def _search_batch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._faiss_index is None:
            scores, ids = exact_top_k(queries, self._embeddings, k)
            return scores.numpy(), ids.numpy()
        return faiss_top_k(self._faiss_index, queries, k, self._embeddings, self.config.refine_factor or 1)

    def _check_ids(self, ids: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        array = np.asarray(ids)
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"Block ids must be integers, got dtype {array.dtype}.")
        flat = array.reshape(-1).astype(np.int64, copy=False)
        bad = flat[(flat < 0) | (flat >= len(self))]
        if len(bad):
            raise ValueError(f"Block id {int(bad[0])} is out of range [0, {len(self)}).")
        return flat, array.shape


# ----------------------------------------------------------------------------------------------------------------
# Helpers: validation
# ----------------------------------------------------------------------------------------------------------------


def build_index(
    corpus: datasets.Dataset,
    embedder: torch.nn.Module,
    tokenizer,
    index_factory: str = "Flat",
    batch_size: int = 128,
    accelerator=None,
    show_progress: bool = True,
    **build_kwargs,
) -> RealmIndex:
    r"""
    Embeds every block of `corpus` with the document tower `embedder` and indexes the embeddings: the one way
    realm_hf builds an index from a model. The `index_factory` string is checked against the embedding dimension and
    the corpus size before anything is embedded, and the index records the embedder's fingerprint, so that
    [`RealmIndex.check_embedder`] can tell whether it is stale.

    Args:
        corpus (`datasets.Dataset`): Blocks with `token_ids` (and optionally `title_token_ids`), e.g. from
            [`~realm_hf.retrieval.corpus.tokenize_blocks`].
        embedder ([`RealmEmbedder`]): The document tower.
        tokenizer: Supplies the special token ids.
        index_factory (`str`, *optional*, defaults to `"Flat"`): See [`RealmIndex.build`].
        batch_size (`int`, *optional*, defaults to 128): Blocks per forward pass.
        accelerator (`accelerate.Accelerator`, *optional*): Splits the embedding over its processes (every process
            gets the whole index).
        show_progress (`bool`, *optional*, defaults to `True`): Progress bars.
        build_kwargs: Passed to [`RealmIndex.build`] (`nprobe`, `train_size`, `refine_factor`, ...).

    Returns:
        [`RealmIndex`]

    Raises:
        `ValueError`: for an index_factory string FAISS cannot build, or an IVF one with more lists than blocks.
    """
    dim = getattr(getattr(embedder, "config", None), "retriever_proj_size", None)
    if dim is not None:
        check_index_factory(index_factory, dim, len(corpus))
    embeddings = embed_corpus(
        embedder, corpus, tokenizer, batch_size=batch_size, accelerator=accelerator, show_progress=show_progress
    )
    return RealmIndex.build(
        corpus,
        embeddings,
        index_factory=index_factory,
        embedder_fingerprint=compute_embedder_fingerprint(embedder),
        show_progress=show_progress,
        **build_kwargs,
    )


def read_shards(directory: str | os.PathLike, mmap: bool = True) -> tuple[dict[str, Any], list[RealmIndex]]:
    """The manifest of a sharded index directory and its shards, each a [`RealmIndex`], checked against it."""
    directory = Path(directory)
    manifest = read_sharded_manifest(directory)
    shards = [RealmIndex.from_pretrained(directory / entry["directory"], mmap=mmap) for entry in manifest["shards"]]
    for entry, shard in zip(manifest["shards"], shards):
        if len(shard) != entry["end"] - entry["start"]:
            raise ValueError(
                f"{directory / entry['directory']} has {len(shard)} blocks, but the manifest says "
                f"[{entry['start']}, {entry['end']})."
            )
    if sum(len(s) for s in shards) != manifest["num_blocks"]:
        raise ValueError(f"{directory}: the shards do not add up to the manifest's {manifest['num_blocks']} blocks.")
    return manifest, shards


def _without_search_indexes(dataset: datasets.Dataset) -> datasets.Dataset:
    """A new `Dataset` object over the same Arrow data (no copy of the rows), with no search index attached."""
    if dataset._indices is not None:
        dataset = dataset.flatten_indices()
    return datasets.Dataset(dataset.data, info=dataset.info.copy(), split=dataset.split)


def _check_corpus(corpus: Any) -> None:
    if not isinstance(corpus, datasets.Dataset):
        raise TypeError(f"`corpus` must be a datasets.Dataset, got {type(corpus).__name__}.")
    if corpus.list_indexes():
        raise ValueError(
            f"The corpus has datasets search indexes attached ({corpus.list_indexes()}); drop them with "
            "`corpus.drop_index(name)` first (RealmIndex manages its own FAISS index)."
        )


def _check_embedding_matrix(array: Any, name: str) -> None:
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D numpy array, got {type(array).__name__} {getattr(array, 'shape', '')}."
        )


def _check_finite(array: np.ndarray, name: str, chunk_rows: int = 1 << 16) -> None:
    """Raise if `array` has NaN/inf values (checked in row chunks, so no full-size temporary)."""
    for start in range(0, len(array), chunk_rows):
        finite = np.isfinite(array[start : start + chunk_rows])
        if not finite.all():
            row = start + int(np.flatnonzero(~finite.all(axis=1))[0])
            raise ValueError(f"`{name}` contains NaN or infinite values (first in row {row}).")


def _unflatten(values: list, shape: tuple[int, ...]) -> Any:
    if len(shape) == 0:
        return values[0]
    for size in reversed(shape[1:]):
        values = [values[i : i + size] for i in range(0, len(values), size)]
    return values
