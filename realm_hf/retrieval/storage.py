"""Where saved things are: one resolver of "a local directory or a Hub repository id" for every `from_pretrained`
of realm_hf (models with their index, indexes, retrievers)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.utils import validate_repo_id

from ..version import __version__


def resolve_directory(
    name_or_path: str | os.PathLike,
    *,
    repo_type: str = "model",
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
) -> Path:
    r"""
    The local directory of `name_or_path`: the directory itself, or the snapshot of a Hub repository (downloaded with
    `huggingface_hub.snapshot_download`, so the cache, `HF_HUB_OFFLINE=1` and `local_files_only` work as everywhere).

    Args:
        name_or_path (`str` or `os.PathLike`): A local directory or a Hub repository id (`name` or `owner/name`).
        repo_type (`str`, *optional*, defaults to `"model"`): Hub repository type.
        subfolder (`str`, *optional*): A folder inside the directory or repository (only it is downloaded).
        revision, token, cache_dir, local_files_only: As for `snapshot_download`.
        allow_patterns (`Sequence[str]`, *optional*): Only these files are downloaded (relative to `subfolder`).
        ignore_patterns (`Sequence[str]`, *optional*): Files not to download.

    Returns:
        `Path`: the directory (the subfolder inside it when one is given).

    Raises:
        `ValueError`: naming `name_or_path` when it is a file, a path to no directory, or not a valid repository id.
    """
    text = os.fspath(name_or_path)
    if not text:
        raise ValueError("Expected a local directory or a Hub repo id, got an empty string.")
    path = Path(text).expanduser()
    if path.is_dir():
        directory = path
    else:
        if path.exists():
            raise ValueError(f"{text} is a file; expected a local directory or a Hub repo id.")
        if _looks_like_a_path(name_or_path):
            raise ValueError(f"{text!r} is neither a local directory nor a valid Hub repo id: not a directory here.")
        try:
            validate_repo_id(text)
        except ValueError as err:
            raise ValueError(
                f"{text!r} is neither a local directory nor a valid Hub repo id: not a directory here, and {err}"
            ) from err
        directory = Path(
            snapshot_download(
                text,
                repo_type=repo_type,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                allow_patterns=_allowed(subfolder, allow_patterns),
                ignore_patterns=None if ignore_patterns is None else list(ignore_patterns),
                library_name="realm_hf",
                library_version=__version__,
            )
        )
    if subfolder is None:
        return directory
    parts = Path(subfolder).parts
    if Path(subfolder).is_absolute() or ".." in parts or not parts:
        raise ValueError(f"subfolder {subfolder!r} must be a relative path inside {text}.")
    return directory / subfolder


def _allowed(subfolder: str | None, patterns: Sequence[str] | None) -> list[str] | None:
    prefix = "" if subfolder is None else subfolder.strip("/") + "/"
    if patterns is None:
        return None if subfolder is None else [f"{prefix}*"]
    return [prefix + pattern for pattern in patterns]


def _looks_like_a_path(name_or_path: str | os.PathLike) -> bool:
    """Hub repo ids are `name` or `owner/name`; anything else with a path's shape is a missing local path."""
    text = os.fspath(name_or_path)
    return (
        isinstance(name_or_path, os.PathLike)
        or os.path.isabs(text)
        or text.startswith((".", "~"))
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
    )


__all__ = ["resolve_directory"]
