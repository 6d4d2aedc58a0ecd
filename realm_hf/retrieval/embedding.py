"""Embedding a knowledge corpus with a [`RealmEmbedder`], across all Accelerate processes.

Rows are split into fixed-size chunks; process `r` of `w` embeds chunks `r, r + w, r + 2w, ...`. Without an output
directory the chunks are gathered in memory on every process. With one, each chunk is written atomically as
`chunk-<start>-<end>.npy` and skipped when it already exists, so an interrupted run resumes where it stopped, at any
world size (chunk boundaries do not depend on the number of processes).
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from ..file_utils import atomic_open
from ..logging import get_logger
from .formats import document_tower_inputs


logger = get_logger(__name__)


def _column_lists(corpus: datasets.Dataset, name: str, start: int, end: int) -> list[list[int]]:
    if name not in corpus.column_names:
        return [[] for _ in range(end - start)]
    column: pa.ChunkedArray = corpus.data.column(name).slice(start, end - start)
    return column.to_pylist()


def _chunks(num_rows: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_size, num_rows)) for start in range(0, num_rows, chunk_size)]


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row positions grouped into batches of rows of similar length, longest first.

    A batch is padded to its longest row; consecutive corpus rows have very different lengths, sorted ones do not, so
    the document tower computes far fewer padding positions. The longest batch comes first, so a batch size that does
    not fit in memory fails at once.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def _embed_rows(
    embedder: torch.nn.Module,
    corpus: datasets.Dataset,
    start: int,
    end: int,
    batch_size: int,
    special_ids: tuple[int, int, int],
    max_length: int,
    autocast_dtype: torch.dtype | None,
) -> np.ndarray:
    """Embeddings of the rows `[start, end)`, in row order, computed over [`length_sorted_batches`]."""
    device = next(embedder.parameters()).device
    titles = _column_lists(corpus, "title_token_ids", start, end)
    bodies = _column_lists(corpus, "token_ids", start, end)
    lengths = np.fromiter((len(t) + len(b) for t, b in zip(titles, bodies)), dtype=np.int64, count=end - start)
    embeddings = None
    for rows in length_sorted_batches(lengths, batch_size):
        inputs = document_tower_inputs(
            [titles[i] for i in rows], [bodies[i] for i in rows], *special_ids, max_length=max_length
        )
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            batch = embedder(**inputs, return_dict=True).projected_score
        if embeddings is None:
            embeddings = np.empty((end - start, batch.size(-1)), dtype=np.float32)
        embeddings[rows] = batch.float().cpu().numpy()
    return embeddings


def embed_corpus(
    embedder: torch.nn.Module,
    corpus: datasets.Dataset,
    tokenizer,
    batch_size: int = 128,
    max_length: int | None = None,
    accelerator=None,
    output_dir: str | os.PathLike | None = None,
    chunk_size: int = 16384,
    autocast_dtype: torch.dtype | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    r"""
    Embeds every block of a corpus with the document tower: `[CLS] title [SEP] block [SEP]` built from the
    pre-tokenized `title_token_ids` and `token_ids` columns (nothing is re-tokenized). Within each chunk, blocks are
    batched with blocks of similar length ([`length_sorted_batches`]), so little padding is computed.

    Args:
        embedder ([`RealmEmbedder`]): The document tower; it is put in eval mode for the pass and restored after.
        corpus (`datasets.Dataset`): Blocks with a `token_ids` column (and optionally `title_token_ids`).
        tokenizer: Supplies the `[CLS]`, `[SEP]` and `[PAD]` ids.
        batch_size (`int`): Blocks per forward pass.
        max_length (`int`, *optional*): Maximum input length; defaults to `config.block_seq_len`.
        accelerator (`accelerate.Accelerator`, *optional*): Splits the chunks over its processes and gathers them.
        output_dir (`str`, *optional*): Where chunk files are written; existing chunks are reused (resume).
        chunk_size (`int`): Rows per chunk (the unit of work sharing and of resumption).
        autocast_dtype (`torch.dtype`, *optional*): For example `torch.bfloat16` on GPU.
        show_progress (`bool`): Progress bar on the main process.

    Returns:
        `np.ndarray` of shape `(num_blocks, retriever_proj_size)`, float32, row i embedding block i, on every process.
    """
    if "token_ids" not in corpus.column_names:
        raise ValueError("embed_corpus needs pre-tokenized blocks (a `token_ids` column).")
    if corpus._indices is not None:  # shuffled/filtered/selected: read rows in dataset order, not table order
        corpus = corpus.flatten_indices()
    num_rows = len(corpus)
    if num_rows == 0:
        raise ValueError("embed_corpus: the corpus is empty.")
    special_ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    max_length = max_length or getattr(embedder.config, "block_seq_len", 288)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    chunks = _chunks(num_rows, chunk_size)
    mine = chunks[rank::world]
    out_path = Path(output_dir) if output_dir is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)

    was_training = embedder.training
    embedder.eval()
    local: dict[tuple[int, int], np.ndarray] = {}
    progress = tqdm(total=sum(e - s for s, e in mine), desc="Embedding corpus", disable=not show_progress or rank != 0)
    try:
        for start, end in mine:
            chunk_file = out_path / f"chunk-{start:012d}-{end:012d}.npy" if out_path is not None else None
            if chunk_file is not None and chunk_file.exists():
                array = np.load(chunk_file)
            else:
                array = _embed_rows(embedder, corpus, start, end, batch_size, special_ids, max_length, autocast_dtype)
                if chunk_file is not None:
                    with atomic_open(chunk_file, "wb") as handle:
                        np.save(handle, array)
            local[(start, end)] = array
            progress.update(end - start)
    finally:
        progress.close()
        embedder.train(was_training)

    if world == 1:
        return np.concatenate([local[c] for c in chunks], axis=0)
    return _gather_chunks(local, chunks, world, accelerator)


def _gather_chunks(local, chunks, world, accelerator) -> np.ndarray:
    """All-gathers each process's chunks (padded to the same row count) and reassembles them in corpus order."""
    rows_per_rank = [sum(e - s for s, e in chunks[r::world]) for r in range(world)]
    mine = [local[c] for c in chunks[accelerator.process_index :: world]]
    width_tensor = torch.tensor([mine[0].shape[1] if mine else 0], device=accelerator.device)
    width = int(accelerator.gather(width_tensor).max().item())
    padded = np.zeros((max(rows_per_rank), width), dtype=np.float32)
    if mine:
        stacked = np.concatenate(mine, axis=0)
        padded[: len(stacked)] = stacked
    gathered = accelerator.gather(torch.from_numpy(padded).to(accelerator.device)).cpu().numpy()
    gathered = gathered.reshape(world, max(rows_per_rank), width)
    per_rank = {r: iter(np.split(gathered[r][: rows_per_rank[r]], np.cumsum([e - s for s, e in chunks[r::world]])[:-1]))
                for r in range(world)}  # fmt: skip
    return np.concatenate([next(per_rank[i % world]) for i in range(len(chunks))], axis=0)
