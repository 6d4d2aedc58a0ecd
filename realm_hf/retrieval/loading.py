"""The one loader of a saved knowledge index: it looks at what is on disk and loads it.

A directory (local, or a Hub repository downloaded with [`~realm_hf.retrieval.storage.resolve_directory`]) can hold

- a plain index (`index_config.json`: [`RealmIndex.save_pretrained`]),
- a sharded one (`sharded_index.json`: [`ShardedRealmIndex.save_pretrained`] by several processes), or
- a saved model with its index in `index/` ([`~realm_hf.hub.publish.save_realm`]).

[`load_index`] loads any of them as one [`RealmIndex`], or, with `sharded=True`, split over this run's processes
(collective; any number of processes, whatever the number that saved it).
"""

from __future__ import annotations

import os
from pathlib import Path

from .index import RealmIndex
from .index_format import INDEX_CONFIG_NAME, INDEX_SUBFOLDER, SHARDED_INDEX_MANIFEST, is_saved_index
from .protocols import RefreshableIndex
from .sharded import ShardedRealmIndex
from .storage import resolve_directory


def find_index_directory(directory: str | os.PathLike) -> Path | None:
    """The directory of the saved index in `directory`: itself, or its `index/` folder; `None` if neither holds one."""
    directory = Path(directory)
    for candidate in (directory, directory / INDEX_SUBFOLDER):
        if is_saved_index(candidate):
            return candidate
    return None


def load_index(
    pretrained_index_name_or_path: str | os.PathLike,
    sharded: bool = False,
    mmap: bool = True,
    revision: str | None = None,
    repo_type: str = "dataset",
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> RefreshableIndex:
    r"""
    Loads the saved index of a directory or Hub repository, whatever its kind (see the module docstring).

    Args:
        pretrained_index_name_or_path (`str` or `os.PathLike`): A local directory or a Hub repository id.
        sharded (`bool`, *optional*, defaults to `False`): Split the index over the processes of `torch.distributed`
            ([`ShardedRealmIndex`]; every process must call this), instead of one [`RealmIndex`] per process.
        mmap (`bool`, *optional*, defaults to `True`): Memory-map the embeddings and the FAISS index.
        revision, repo_type, token, cache_dir, local_files_only: Where a Hub repository is read from (a dataset
            repository by default; `repo_type="model"` for a model saved with its index).

    Returns:
        [`RealmIndex`], or [`ShardedRealmIndex`] with `sharded=True`.

    Raises:
        `ValueError`: if the directory holds no saved index (naming the files looked for).
    """
    directory = resolve_directory(
        pretrained_index_name_or_path,
        repo_type=repo_type,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    )
    found = find_index_directory(directory)
    if found is None:
        raise ValueError(
            f"{pretrained_index_name_or_path} holds no saved index: no {INDEX_CONFIG_NAME} or "
            f"{SHARDED_INDEX_MANIFEST}, in it or in its {INDEX_SUBFOLDER}/ folder."
        )
    if sharded:
        return ShardedRealmIndex.from_pretrained(found, mmap=mmap)
    return RealmIndex.from_pretrained(found, mmap=mmap)


__all__ = ["find_index_directory", "load_index"]
