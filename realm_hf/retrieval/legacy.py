"""Everything about the original transformers REALM's files (`google/realm-*`) that is not a weight.

Model weights of those checkpoints load directly with `from_pretrained`; this module reads the rest: the corpus
embeddings `block_emb` that `RealmForOpenQA` checkpoints stored in their state dict, and the blocks themselves,
`block_records.npy`, a pickled numpy array read only with `allow_pickle=True` ([`legacy_corpus`]). It also keeps
block records without pickle ([`save_block_records`] / [`load_block_records`]: an Arrow dataset), for the retriever
built the transformers-4 way (`RealmRetriever(block_records, tokenizer)`).
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from safetensors import safe_open

from ..file_utils import atomic_directory
from ..logging import get_logger
from .corpus import tokenize_blocks
from .storage import resolve_directory


logger = get_logger(__name__)

BLOCK_EMB_KEY = "block_emb"
#: The pickled block records of a transformers-4 REALM checkpoint.
LEGACY_BLOCK_RECORDS_NAME = "block_records.npy"
#: Block records saved without pickle (an Arrow dataset with a `record` bytes column).
BLOCK_RECORDS_DIR = "block_records"


class PickleNotAllowedError(ValueError):
    """A legacy `block_records.npy` (a pickle) was found, and reading it was not allowed."""


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _resolve_weights_file(path: str | os.PathLike, **hub_kwargs) -> Path:
    """A weights file as given, or the first of `_WEIGHT_FILES` in a local directory or Hub repository (only that
    file is downloaded)."""
    if Path(path).is_file():
        return Path(path)
    for name in _WEIGHT_FILES:
        candidate = resolve_directory(path, allow_patterns=[name], **hub_kwargs) / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{os.fspath(path)!r} has neither {' nor '.join(_WEIGHT_FILES)}.")


def load_legacy_block_emb(path: str | os.PathLike, **hub_kwargs) -> torch.Tensor:
    r"""
    Reads the corpus embeddings (`block_emb`, shape `(num_block_records, retriever_proj_size)`) of a checkpoint of the
    original `RealmForOpenQA`.

    `pytorch_model.bin` files are read with torch's weights-only unpickler (no code from the file runs) and
    memory-mapped, so the 6.8 GB tensor of the published checkpoints is not copied into RAM.

    Args:
        path (`str` or `os.PathLike`):
            A weights file, a checkpoint directory, or a Hub repository id (only the weights file is downloaded).
        hub_kwargs:
            Passed to [`~realm_hf.retrieval.storage.resolve_directory`] (`revision`, `token`, `cache_dir`,
            `local_files_only`).

    Returns:
        `torch.FloatTensor` of shape `(num_block_records, dim)`.
    """
    weights_file = _resolve_weights_file(path, **hub_kwargs)
    if weights_file.suffix == ".safetensors":
        with safe_open(weights_file, framework="pt") as handle:
            if BLOCK_EMB_KEY not in handle.keys():
                raise KeyError(
                    f"{weights_file} has no {BLOCK_EMB_KEY!r} tensor: it is not a RealmForOpenQA checkpoint."
                )
            return handle.get_tensor(BLOCK_EMB_KEY)
    try:
        state_dict = torch.load(weights_file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # Files in torch's pre-1.6 (non-zip) format cannot be memory-mapped.
        state_dict = torch.load(weights_file, map_location="cpu", weights_only=True)
    if BLOCK_EMB_KEY not in state_dict:
        raise KeyError(f"{weights_file} has no {BLOCK_EMB_KEY!r} tensor: it is not a RealmForOpenQA checkpoint.")
    block_emb = state_dict[BLOCK_EMB_KEY]
    if block_emb.dim() != 2:
        raise ValueError(f"{weights_file}: {BLOCK_EMB_KEY} must be 2-D, got shape {tuple(block_emb.shape)}.")
    logger.info(f"Read {BLOCK_EMB_KEY} {tuple(block_emb.shape)} from {weights_file}.")
    return block_emb


def load_legacy_block_records(path: str | os.PathLike, allow_pickle: bool) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"{path} is missing.")
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in readers:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = readers[version](f, max_header_size=1 << 20)
    except ValueError as err:
        raise ValueError(f"{path} is not a readable .npy file: {err}") from err
    if dtype.hasobject and not allow_pickle:
        raise ValueError(
            f"{path} is a numpy object array, i.e. a pickle (the legacy transformers REALM `block_records.npy` "
            "format); unpickling can execute arbitrary code. If you trust the file, pass `allow_pickle=True` to "
            "convert it once, then use `save_pretrained`, whose output has no pickle."
        )
    records = np.load(path, allow_pickle=allow_pickle)
    if records.ndim != 1:
        raise ValueError(f"{path} must hold a 1-D array of blocks, got shape {shape}.")
    return records


def decode_legacy_record(record: Any, row: int, path: str | os.PathLike) -> str:
    if isinstance(record, (bytes, np.bytes_)):
        try:
            return bytes(record).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: block {row} is not valid UTF-8 ({err}).") from err
    if isinstance(record, str):
        return record
    raise ValueError(f"{path}: block {row} is a {type(record).__name__}, expected UTF-8 bytes.")


def legacy_corpus(
    records: np.ndarray | Sequence[bytes | str],
    tokenizer: Any,
    titles: Sequence[str] | None = None,
    num_proc: int | None = None,
    source: str | os.PathLike = "block_records",
) -> datasets.Dataset:
    r"""
    The blocks of the original REALM as a corpus of realm_hf: `title`, `text`, `doc_id` (the row) and their token ids
    ([`~realm_hf.retrieval.corpus.tokenize_blocks`]).

    Args:
        records (array or list of UTF-8 `bytes` or `str`): The block records ([`load_legacy_block_records`] reads
            them from a `block_records.npy`).
        tokenizer: The BERT tokenizer that pre-tokenizes the blocks.
        titles (`Sequence[str]`, *optional*): One title per block (the legacy blocks have none: empty titles).
        num_proc (`int`, *optional*): Processes for tokenization.
        source (`str` or `os.PathLike`, *optional*): Where the records come from, for error messages.
    """
    if len(records) == 0:
        raise ValueError(f"{os.fspath(source)} holds no blocks.")
    if titles is not None and len(titles) != len(records):
        raise ValueError(f"Got {len(titles)} titles for {len(records)} blocks.")
    texts = [decode_legacy_record(record, row, source) for row, record in enumerate(records)]
    corpus = datasets.Dataset.from_dict(
        {
            "title": list(titles) if titles is not None else [""] * len(texts),
            "text": texts,
            "doc_id": np.arange(len(texts), dtype=np.int64),
        }
    )
    return tokenize_blocks(corpus, tokenizer, num_proc=num_proc)


def save_block_records(records: Sequence[bytes | str], directory: str | os.PathLike) -> Path:
    """Saves block records without pickle, atomically: `directory/block_records/`, an Arrow dataset whose `record`
    column holds each block's bytes as given (strings as UTF-8)."""
    target = Path(directory) / BLOCK_RECORDS_DIR
    rows = [record.encode("utf-8") if isinstance(record, str) else bytes(record) for record in records]
    with atomic_directory(target) as staging:
        datasets.Dataset.from_dict(
            {"record": rows}, features=datasets.Features({"record": datasets.Value("binary")})
        ).save_to_disk(staging)
    return target


def load_block_records(directory: str | os.PathLike) -> np.ndarray | None:
    """The block records [`save_block_records`] saved in `directory` (an object array of `bytes`, as the original
    `block_records` was), or `None` when there are none."""
    path = Path(directory) / BLOCK_RECORDS_DIR
    if not path.is_dir():
        return None
    records = datasets.load_from_disk(str(path))["record"]
    return np.array(records, dtype=object)
