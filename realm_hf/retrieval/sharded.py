"""A knowledge index sharded over the processes of `torch.distributed`: no process holds the whole embedding matrix.

Each of the N processes of the default process group (the one Accelerate starts) owns a contiguous 1/N of the block
ids: their embeddings and a FAISS index over them, a [`RealmIndex`] over its rows. The corpus itself (the Arrow table
of the blocks) is memory-mapped by every process, which costs page cache, not process memory, so block lookups for
reader and candidate inputs stay local. Searching is collective: the processes all-gather their queries, each
searches its shard, the (score, global id) candidates are all-gathered and every process merges the global top-k of
its own queries. With exact search this gives the single index's top-k ids and scores (ties aside). Refreshing is
sharded too: each process re-embeds only its own blocks.

[`ShardedRealmIndex`] implements the [`~realm_hf.retrieval.protocols.Index`] protocol, so [`RealmRetriever`], the
models and [`train_realm`] use it unchanged, **as long as every process calls `search` and `get_embeddings` at the
same time** (as training steps do).

Saved (collectively, atomically) as one directory: `sharded_index.json` (the manifest) and one
[`RealmIndex`] directory per shard (`shard-00000-of-00002/`, ...), each loadable on its own. It loads with any number
of processes (re-sharded on load, FAISS rebuilt where the boundaries move), and [`RealmIndex.from_pretrained`] loads
it in one process as a plain index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.distributed as dist

from ..file_utils import atomic_directory, atomic_write_text
from ..logging import get_logger
from .index import RealmIndex, build_index, read_shards
from .index_format import SHARDED_INDEX_FORMAT, SHARDED_INDEX_MANIFEST, check_replaceable
from .search import as_float32_matrix


logger = get_logger(__name__)


def shard_range(num_blocks: int, rank: int, world_size: int) -> tuple[int, int]:
    """The block ids `[start, end)` that process `rank` of `world_size` owns: contiguous, sizes differing by <= 1."""
    return num_blocks * rank // world_size, num_blocks * (rank + 1) // world_size


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather_rows(rows: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
    """Every process's `rows` (first dimension may differ between processes), in rank order, and their counts."""
    world_size = dist.get_world_size()
    count = torch.tensor([rows.shape[0]], dtype=torch.int64)
    counts = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    gathered = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return [g[:c] for g, c in zip(gathered, counts)], counts


class ShardedRealmIndex:
    r"""
    A [`RealmIndex`] split by block id over the processes of `torch.distributed` (see the module docstring).

    Args:
        corpus (`datasets.Dataset`): Every block, one row per global block id (memory-mapped; shared by the processes).
        shard ([`RealmIndex`]): This process's blocks `shard_range(len(corpus), rank, world_size)`, their embeddings
            and search index.

    Example (each of 2 processes, after `torch.distributed.init_process_group`):

    ```python
    >>> index = ShardedRealmIndex.from_index(RealmIndex.from_pretrained("index"))  # keeps only its half
    >>> scores, ids = index.search(query_embeddings, k=5)  # collective: every process calls it
    ```
    """

    #: Search, `get_embeddings`, refresh and save are collective: every process calls them at the same time.
    is_collective = True

    def __init__(self, corpus: datasets.Dataset, shard: RealmIndex) -> None:
        self.rank, self.world_size = _world()
        self.start, self.end = shard_range(len(corpus), self.rank, self.world_size)
        if len(shard) != self.end - self.start:
            raise ValueError(
                f"Process {self.rank} of {self.world_size} owns blocks [{self.start}, {self.end}) of {len(corpus)}, "
                f"but its shard has {len(shard)} blocks."
            )
        self._corpus = corpus
        self.shard = shard

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_index(cls, index: RealmIndex) -> ShardedRealmIndex:
        """This process's shard of a single index (a memory-mapped one: only its rows are read)."""
        rank, world_size = _world()
        start, end = shard_range(len(index), rank, world_size)
        return cls(index.corpus, _shard_of(index.corpus, index.embeddings[start:end], index, start, end))

    @classmethod
    def build(
        cls,
        corpus: datasets.Dataset,
        embedder: torch.nn.Module,
        tokenizer,
        index_factory: str = "Flat",
        batch_size: int = 128,
        show_progress: bool = False,
        **build_kwargs,
    ) -> ShardedRealmIndex:
        """Embeds this process's blocks of `corpus` with the document tower `embedder` and indexes them (collective
        only in that every process builds its own shard; no process embeds another's blocks)."""
        rank, world_size = _world()
        start, end = shard_range(len(corpus), rank, world_size)
        rows = corpus.select(range(start, end))
        shard = build_index(
            rows,
            embedder,
            tokenizer,
            index_factory,
            batch_size=batch_size,
            show_progress=show_progress,
            **build_kwargs,
        )
        return cls(corpus, shard)

    def refresh_from(
        self,
        embedder: torch.nn.Module,
        tokenizer,
        batch_size: int = 128,
        accelerator=None,
        show_progress: bool = False,
    ) -> ShardedRealmIndex:
        """The REALM index refresh, sharded (collective): this process re-embeds only its own blocks and rebuilds its
        shard's search index. Returns a new index; `self` is unchanged. `accelerator` is accepted for the
        [`~realm_hf.retrieval.protocols.RefreshableIndex`] contract: the shards already split the work."""
        shard = self.shard.refresh_from(embedder, tokenizer, batch_size=batch_size, show_progress=show_progress)
        return type(self)(self._corpus, shard)

    # -- the Index protocol --------------------------------------------------------------------------------------

    @property
    def corpus(self) -> datasets.Dataset:
        return self._corpus

    @property
    def embedding_dim(self) -> int:
        return self.shard.embedding_dim

    @property
    def config(self):
        """The shard's [`RealmIndexConfig`] (factory string, search parameters, embedder fingerprint)."""
        return self.shard.config

    def __len__(self) -> int:
        return len(self._corpus)

    def __repr__(self) -> str:
        return (
            f"ShardedRealmIndex(num_blocks={len(self)}, shard={self.rank}/{self.world_size} "
            f"[{self.start}, {self.end}), dim={self.embedding_dim}, index_factory={self.config.index_factory!r})"
        )

    def search(self, query_embeddings: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The global top-`k` blocks of this process's queries (collective: every process calls it, with its own
        number of queries, possibly 0). Returns float32 scores and int64 global ids, `(num_queries, k)`."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(self):
            raise ValueError(f"`k` must be an int in [1, {len(self)}] (the number of blocks), got {k!r}.")
        if isinstance(query_embeddings, torch.Tensor):
            query_embeddings = query_embeddings.detach().cpu().float().numpy()
        if getattr(query_embeddings, "ndim", 0) == 2 and len(query_embeddings) == 0:
            queries = np.zeros((0, query_embeddings.shape[1]), np.float32)  # none here; the others may have some
        else:
            queries = as_float32_matrix(query_embeddings, name="query_embeddings")
        if queries.shape[1] != self.embedding_dim:
            raise ValueError(
                f"`query_embeddings` has dim {queries.shape[1]} but the index has dim {self.embedding_dim}."
            )
        if self.world_size == 1:
            return self.shard.search(queries, k)
        gathered, counts = _all_gather_rows(torch.from_numpy(queries))
        every_query = torch.cat(gathered).numpy()
        scores = np.full((len(every_query), k), -np.inf, dtype=np.float32)
        ids = np.full((len(every_query), k), -1, dtype=np.int64)
        local_k = min(k, len(self.shard))
        if local_k > 0 and len(every_query) > 0:
            local_scores, local_ids = self.shard.search(every_query, local_k)
            scores[:, :local_k], ids[:, :local_k] = local_scores, local_ids + self.start
        all_scores, _ = _all_gather_rows(torch.from_numpy(scores))
        all_ids, _ = _all_gather_rows(torch.from_numpy(ids))
        mine = slice(sum(counts[: self.rank]), sum(counts[: self.rank + 1]))
        candidate_scores = torch.cat([s[mine] for s in all_scores], dim=1).numpy()
        candidate_ids = torch.cat([i[mine] for i in all_ids], dim=1).numpy()
        order = np.lexsort((candidate_ids, -candidate_scores), axis=-1)[:, :k]  # score down, then id up
        return np.take_along_axis(candidate_scores, order, 1), np.take_along_axis(candidate_ids, order, 1)

    def get_embeddings(self, ids: np.ndarray | torch.Tensor | Sequence[int]) -> np.ndarray:
        """The embeddings of global block ids, `(*ids.shape, dim)` (collective: every process calls it with its own
        ids; each answers those it owns)."""
        flat = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64)
        shape = flat.shape
        flat = flat.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"Block ids must be in [0, {len(self)}), got {flat.min()}..{flat.max()}.")
        if self.world_size == 1:
            return self.shard.get_embeddings(flat).reshape(*shape, self.embedding_dim)
        gathered, counts = _all_gather_rows(torch.from_numpy(flat))
        every_id = torch.cat(gathered).numpy()
        rows = np.zeros((len(every_id), self.embedding_dim), dtype=np.float32)
        owned = (every_id >= self.start) & (every_id < self.end)
        if owned.any():
            rows[owned] = self.shard.get_embeddings(every_id[owned] - self.start)
        summed = torch.from_numpy(rows)
        dist.all_reduce(summed)  # each row is owned by exactly one process; the others add zeros
        mine = slice(sum(counts[: self.rank]), sum(counts[: self.rank + 1]))
        return summed[mine].numpy().reshape(*shape, self.embedding_dim)

    # -- save / load -------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Saves every shard (collective: every process calls it and writes its own shard; the processes must share
        the file system), atomically: the manifest is written, and the directory swapped in, once all have written.
        An existing directory that is neither a sharded nor a plain saved index is never replaced."""
        target = Path(save_directory).absolute()
        check_replaceable(target)  # every process: all refuse together, none waits for the others
        staging = [None]
        context = None
        if self.rank == 0:
            context = atomic_directory(target)
            staging[0] = str(context.__enter__())
        if self.world_size > 1:
            dist.broadcast_object_list(staging, src=0)
        name = _shard_name(self.rank, self.world_size)
        failed = None
        try:
            self.shard.save_pretrained(Path(staging[0]) / name)
        except Exception as err:  # every process must reach the barrier, or the others hang
            failed = err
        failures = [failed is not None]
        if self.world_size > 1:
            gathered = [None] * self.world_size
            dist.all_gather_object(gathered, failures[0])
            failures = gathered
        if self.rank == 0:
            if any(failures):
                error = failed or RuntimeError(f"A process failed to write its shard of {target}.")
                context.__exit__(type(error), error, None)
            else:
                shards = []
                for r in range(self.world_size):
                    start, end = shard_range(len(self), r, self.world_size)
                    shards.append({"directory": _shard_name(r, self.world_size), "start": start, "end": end})
                manifest = {
                    "format": SHARDED_INDEX_FORMAT,
                    "num_blocks": len(self),
                    "embedding_dim": self.embedding_dim,
                    "index_factory": self.config.index_factory,
                    "shards": shards,
                }
                atomic_write_text(Path(staging[0]) / SHARDED_INDEX_MANIFEST, json.dumps(manifest, indent=2))
                context.__exit__(None, None, None)
        if self.world_size > 1:
            dist.barrier()
        if failed is not None:
            raise failed
        if any(failures):
            raise RuntimeError(f"Another process failed to write its shard of {target}; nothing was replaced.")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, mmap: bool = True) -> ShardedRealmIndex:
        """Loads a saved sharded (or plain) index with this run's number of processes: with the number it was saved
        with, each process reads its own shard; otherwise it is re-sharded (each process reads its rows from the
        memory-mapped shards and rebuilds its search index)."""
        directory = Path(directory)
        rank, world_size = _world()
        if not (directory / SHARDED_INDEX_MANIFEST).is_file():
            return cls.from_index(RealmIndex.from_pretrained(directory, mmap=mmap))
        manifest, shards = read_shards(directory, mmap=mmap)
        corpus = datasets.concatenate_datasets([shard.corpus for shard in shards])
        start, end = shard_range(manifest["num_blocks"], rank, world_size)
        if len(shards) == world_size:
            return cls(corpus, shards[rank])
        pieces = []  # this process's rows, from the saved shards they fall in
        for entry, shard in zip(manifest["shards"], shards):
            low, high = max(start, entry["start"]), min(end, entry["end"])
            if low < high:
                pieces.append(shard.embeddings[low - entry["start"] : high - entry["start"]])
        embeddings = np.concatenate(pieces) if pieces else np.zeros((0, manifest["embedding_dim"]), np.float32)
        return cls(corpus, _shard_of(corpus, embeddings, shards[0], start, end))


def _shard_name(rank: int, world_size: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}"


def _shard_of(corpus: datasets.Dataset, embeddings: np.ndarray, like: RealmIndex, start: int, end: int) -> RealmIndex:
    """A [`RealmIndex`] over blocks `[start, end)` of `corpus` with `embeddings`, searched as `like` is."""
    return like.build_like(corpus.select(range(start, end)), embeddings)
