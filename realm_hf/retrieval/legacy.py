"""Reading the files of the original transformers REALM checkpoints (`google/realm-*`).

Model weights of those checkpoints load directly with `from_pretrained`; this module reads what is not a weight any
more: the corpus embeddings `block_emb` that `RealmForOpenQA` checkpoints stored in their state dict.
"""

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from transformers.utils import logging

from .storage import resolve_directory


logger = logging.get_logger(__name__)

BLOCK_EMB_KEY = "block_emb"
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
