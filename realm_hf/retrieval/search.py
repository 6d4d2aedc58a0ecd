"""Maximum-inner-product search over block embeddings: exact brute force, and FAISS indexes.

[`RealmIndex`] owns the embeddings and the FAISS object and calls these functions; they take arrays and FAISS
indexes, so another index implementation (a sharded one, for example) searches its part of the corpus with the
same code. The measurements behind the choices are in `benchmarks/README.md` ("Design measurements of the index"):

* **Metric.** Always `faiss.METRIC_INNER_PRODUCT`: REALM scores a block by the inner product of the query and block
  embeddings.
* **Exact search** is a chunked brute force directly on the (memory-mapped) embedding matrix: numpy's BLAS `sgemm`
  for a `[queries, chunk]` score block, then `torch.topk`, then a merge. It keeps no second copy of the embeddings,
  and one large `sgemm` + `torch.topk` was faster than `faiss.knn` / `IndexFlatIP.search` on CPUs.
* **IVF-PQ** indexes are built with `do_polysemous_training = False`: polysemous codes only serve Hamming-filtered L2
  search, and their training doubles IVF-PQ training time.
* **Re-scoring.** With `refine_factor > 1`, `refine_factor * k` candidates of an approximate index are re-ranked with
  exact inner products against the stored embeddings.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..logging import get_logger


logger = get_logger(__name__)

DEFAULT_HNSW_EF_SEARCH = 128
#: Floats in one `[queries, blocks]` score chunk of brute-force search (256 MB).
EXACT_SCORE_BUDGET = 1 << 26


def import_faiss() -> Any:
    """The `faiss` module, with an error that says how to install it."""
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss is a dependency
        raise ImportError(
            "RealmIndex needs FAISS: `pip install faiss-cpu` (or a GPU build such as `faiss-gpu-cu12`)."
        ) from err
    return faiss


def as_float32_matrix(array: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """`array` as a C-contiguous float32 `(rows, dim)` matrix, refusing non-numeric, non-2-D and empty input."""
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(array)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"`{name}` must be numeric, got dtype {array.dtype}.")
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (num_vectors, dim), got shape {array.shape}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"`{name}` is empty (shape {array.shape}).")
    return np.ascontiguousarray(array, dtype=np.float32)


def is_flat(index_factory: str) -> bool:
    """Whether a FAISS `index_factory` string describes exact search (no FAISS object is built for it)."""
    return index_factory.replace(" ", "") == "Flat"


# -- exact search ------------------------------------------------------------------------------------------------


def exact_top_k(
    queries: np.ndarray, embeddings: np.ndarray, k: int, einsum: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by brute force over row chunks of `embeddings`, merged with a second `torch.topk`.

    A chunk's score matrix holds at most `EXACT_SCORE_BUDGET` floats (256 MB), so memory stays bounded for any corpus
    size.

    Args:
        queries (`np.ndarray` of shape `(num_queries, dim)`, float32):
            Query embeddings.
        embeddings (`np.ndarray` of shape `(num_blocks, dim)`, float32):
            Block embeddings (may be a read-only memory map).
        k (`int`):
            Blocks per query.
        einsum (`bool`, *optional*, defaults to `False`):
            Score with `torch.einsum("BD,QD->QB")`, exactly as the old transformers `RealmForOpenQA` did, instead of
            numpy's BLAS `sgemm`.

    Returns:
        `tuple(torch.Tensor, torch.Tensor)`: `scores` and `ids` of shape `(num_queries, k)`, by decreasing score.
    """
    score_fn = _einsum_scores if einsum else _blas_scores
    chunk = max(k, EXACT_SCORE_BUDGET // max(1, len(queries)))
    best_scores = best_ids = None
    with torch.no_grad():
        for start in range(0, len(embeddings), chunk):
            scores = score_fn(queries, embeddings[start : start + chunk])
            top_scores, top_ids = torch.topk(scores, k=min(k, scores.shape[1]), dim=-1)
            top_ids = top_ids + start
            if best_scores is not None:
                top_scores = torch.cat([best_scores, top_scores], dim=1)
                top_ids = torch.cat([best_ids, top_ids], dim=1)
                top_scores, order = torch.topk(top_scores, k=min(k, top_scores.shape[1]), dim=-1)
                top_ids = torch.gather(top_ids, 1, order)
            best_scores, best_ids = top_scores, top_ids
    return best_scores, best_ids


def _einsum_scores(queries: np.ndarray, blocks: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():
        # Memory-mapped embeddings are read-only; torch warns about that, but nothing writes to them here.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.einsum("BD,QD->QB", torch.from_numpy(blocks), torch.from_numpy(queries))


def _blas_scores(queries: np.ndarray, blocks: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(queries @ blocks.T)


# -- FAISS search ------------------------------------------------------------------------------------------------


def faiss_top_k(
    faiss_index: Any, queries: np.ndarray, k: int, embeddings: np.ndarray, refine_factor: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Search a FAISS index, re-scoring `refine_factor * k` candidates exactly against `embeddings` when > 1.

    Returns:
        `tuple(np.ndarray, np.ndarray)`: float32 `scores` and int64 `ids` of shape `(num_queries, k)`; missing hits
        (approximate indexes may return fewer than `k`) have id `-1` and score `-inf`.
    """
    num_candidates = min(len(embeddings), k * refine_factor)
    scores, ids = faiss_index.search(queries, num_candidates)
    if refine_factor > 1:
        valid = ids >= 0
        vectors = embeddings[np.where(valid, ids, 0).reshape(-1)].reshape(*ids.shape, -1)
        exact = np.matmul(vectors, queries[:, :, None])[:, :, 0]
        exact[~valid] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores, ids = np.take_along_axis(exact, order, axis=1), np.take_along_axis(ids, order, axis=1)
    scores[ids < 0] = -np.inf
    return scores, ids


def set_search_parameters(faiss_index: Any, nprobe: int | None, hnsw_ef_search: int | None) -> None:
    """Set `nprobe` (IVF) and `efSearch` (HNSW) on a FAISS index; parameters the index lacks are skipped."""
    space = import_faiss().ParameterSpace()
    for faiss_name, value in (("nprobe", nprobe), ("efSearch", hnsw_ef_search)):
        if value is None:
            continue
        try:
            space.set_index_parameter(faiss_index, faiss_name, int(value))
        except RuntimeError:
            logger.debug("The FAISS index has no parameter %s.", faiss_name)


def default_search_parameters(
    faiss_index: Any, nprobe: int | None, hnsw_ef_search: int | None
) -> tuple[int | None, int | None]:
    """`nprobe` (default `sqrt(nlist)`, `None` without IVF) and `efSearch` (default 128 for HNSW) for an index."""
    nlist = _nlist(faiss_index)
    if nlist and nprobe is None:
        nprobe = max(1, round(math.sqrt(nlist)))
    if not nlist:
        nprobe = None
    if hnsw_ef_search is None and "HNSW" in type(import_faiss().downcast_index(faiss_index)).__name__:
        hnsw_ef_search = DEFAULT_HNSW_EF_SEARCH
    return nprobe, hnsw_ef_search


def check_faiss_index(faiss_index: Any, num_blocks: int, dim: int, name: str) -> None:
    """Raise unless `faiss_index` holds `num_blocks` inner-product vectors of dimension `dim`."""
    if faiss_index.ntotal != num_blocks:
        raise ValueError(f"{name} holds {faiss_index.ntotal} vectors but there are {num_blocks} blocks.")
    if faiss_index.d != dim:
        raise ValueError(f"{name} has dim {faiss_index.d} but the embeddings have dim {dim}.")
    if faiss_index.metric_type != import_faiss().METRIC_INNER_PRODUCT:
        raise ValueError(f"{name} must use METRIC_INNER_PRODUCT, got metric {faiss_index.metric_type}.")


def faiss_error(err: Exception) -> str:
    """The informative last line of a FAISS C++ exception message."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else repr(err)


# -- FAISS build -------------------------------------------------------------------------------------------------


def build_faiss_index(
    embeddings: np.ndarray, index_factory: str, train_size: int | None, batch_size: int, show_progress: bool, seed: int
) -> Any:
    """Build and fill an inner-product FAISS index described by `index_factory` (trained on a sample if needed).

    Args:
        embeddings (`np.ndarray` of shape `(num_blocks, dim)`, float32):
            The vectors to add.
        index_factory (`str`):
            A `faiss.index_factory` string, for example `"IVF4096,PQ32"` or `"HNSW32"`.
        train_size (`int`, *optional*):
            Training vectors (default `max(65536, 50 * nlist)`, at most all).
        batch_size (`int`):
            Vectors per `add` call.
        show_progress (`bool`):
            Show a progress bar while adding.
        seed (`int`):
            Seed of the training sample.
    """
    num_blocks, dim = embeddings.shape
    index = _empty_faiss_index(index_factory, dim)
    ivf = _ivf_or_none(index)
    if ivf is not None and getattr(ivf, "do_polysemous_training", False):
        ivf.do_polysemous_training = False
    if not index.is_trained:
        sample = _training_sample(embeddings, _nlist(index), train_size, seed)
        logger.info("Training FAISS index %r on %d of %d vectors.", index_factory, len(sample), num_blocks)
        index.train(sample)
        del sample
    progress = tqdm(total=num_blocks, desc=f"Adding to FAISS {index_factory}", unit="vec", disable=not show_progress)
    with progress:
        for start in range(0, num_blocks, batch_size):
            chunk = np.ascontiguousarray(embeddings[start : start + batch_size])
            index.add(chunk)
            progress.update(len(chunk))
    return index


def check_index_factory(index_factory: str, dim: int, num_blocks: int | None = None) -> None:
    """Refuses, before anything is embedded, a FAISS `index_factory` string that FAISS cannot build for
    `dim`-dimensional inner-product vectors, or an IVF one with more inverted lists than `num_blocks` (FAISS needs at
    least one training vector per list, and about 39 for good centroids).

    Raises:
        `ValueError`: naming the string and the problem.
    """
    if not isinstance(index_factory, str) or not index_factory.strip():
        raise ValueError(f"index_factory must be a FAISS index_factory string such as 'Flat', got {index_factory!r}.")
    if is_flat(index_factory):
        return
    nlist = _nlist(_empty_faiss_index(index_factory, dim))
    if num_blocks is not None and nlist > num_blocks:
        suggestion = max(1, num_blocks // 39)
        raise ValueError(
            f"index_factory {index_factory!r} has {nlist} IVF lists but the corpus has only {num_blocks} blocks; "
            f"use at most about {suggestion} lists (num_blocks / 39), or 'Flat' for exact search."
        )


def _empty_faiss_index(index_factory: str, dim: int) -> Any:
    """The untrained inner-product FAISS index of `index_factory`, or a `ValueError` naming the string."""
    faiss = import_faiss()
    try:
        return faiss.index_factory(int(dim), index_factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"Invalid FAISS index_factory {index_factory!r} for dim {dim}: {faiss_error(err)}") from err


def _ivf_or_none(index: Any) -> Any | None:
    """The (downcast) IVF index inside `index`, or `None`."""
    faiss = import_faiss()
    try:
        return faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:
        return None


def _nlist(index: Any) -> int:
    ivf = _ivf_or_none(index)
    return 0 if ivf is None else int(ivf.nlist)


def _training_sample(embeddings: np.ndarray, nlist: int, train_size: int | None, seed: int) -> np.ndarray:
    num_blocks = len(embeddings)
    size = max(65536, 50 * nlist) if train_size is None else int(train_size)
    size = min(size, num_blocks)
    if nlist and size < nlist:
        raise ValueError(f"train_size={size} is smaller than the number of IVF lists ({nlist}).")
    if size == num_blocks:
        return np.ascontiguousarray(embeddings)
    rows = np.sort(np.random.default_rng(seed).choice(num_blocks, size=size, replace=False))
    return np.ascontiguousarray(embeddings[rows])
