"""Where saved things are: one resolver of "a local directory or a Hub repository id" for every `from_pretrained`
of realm_hf (models with their index, indexes, retrievers)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
from huggingface_hub.utils import get_token, validate_repo_id

from ..logging import get_logger
from ..version import __version__


logger = get_logger(__name__)

_MISSING_TOKEN_MESSAGE = (
    "Publishing to the Hugging Face Hub needs a token with write access, but none was found. Log in with "
    "`hf auth login` (or set the HF_TOKEN environment variable), or pass `token=` explicitly."
)


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


def upload_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    delete_patterns: list[str] | None = None,
    commit_message: str,
    commit_description: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    private: bool | None = None,
    token: str | bool | None = None,
) -> CommitInfo:
    r"""
    Uploads a local folder to a Hub repository in one commit (creating the repository, and the branch `revision`,
    when missing): the one upload path of realm_hf's `push_to_hub` methods and publishing functions.

    Args:
        folder (`str` or `os.PathLike`): The folder; its layout is the repository's.
        repo_id (`str`): `"namespace/name"`, validated before anything is sent.
        repo_type (`str`, *optional*, defaults to `"model"`): `"model"` or `"dataset"`.
        delete_patterns (`list[str]`, *optional*): Files of the repository this upload owns: those matching and not
            in `folder` are deleted in the same commit (a previous index's files, for example).
        commit_message, commit_description, revision, create_pr, private, token: As for `HfApi.upload_folder`;
            `create_pr` opens a pull request against `main`.

    Raises:
        `ValueError`: for a malformed `repo_id`, or `create_pr` with another `revision`.
        `LocalTokenNotFoundError`: without a token.
        `HfHubHTTPError`: when the Hub refuses, with what was being done and a hint.
    """
    repo_id, token = check_upload_target(repo_id, revision, create_pr, token)
    api = HfApi(token=token, library_name="realm_hf", library_version=__version__)
    step = "creating the repository"
    try:
        repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
        if revision is not None and revision != "main" and not revision.startswith("refs/"):
            step = f"creating the branch {revision!r}"
            api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
        step = "uploading the files"
        with warnings.catch_warnings():
            # An index's Arrow corpus in a model repository is intended: the model's retriever travels with it.
            warnings.filterwarnings("ignore", message="It seems that you are about to commit a data file")
            commit = api.upload_folder(
                repo_id=repo_id,
                repo_type=repo_type,
                folder_path=folder,
                commit_message=commit_message,
                commit_description=commit_description,
                revision=revision,
                create_pr=create_pr,
                delete_patterns=delete_patterns,
            )
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        hint = (
            " Check that the token is valid and has write access to this namespace (`hf auth login`)."
            if status in (401, 403)
            else " A failed commit changes nothing on the Hub: call the function again to retry (LFS files that "
            "already reached the server are not uploaded again)."
        )
        err.append_to_message(
            f"\n\nrealm_hf: publishing to {repo_type} repository {repo_id!r} failed while {step}.{hint}"
        )
        raise
    if commit.pr_url:
        logger.info(f"Opened a pull request on {repo_id}: {commit.pr_url}")
    else:
        logger.info(f"Published {repo_type} repository {repo_id} at commit {commit.oid}.")
    return commit


def check_upload_target(
    repo_id: str, revision: str | None = None, create_pr: bool = False, token: str | bool | None = None
) -> tuple[str, str]:
    """Refuses what an upload would fail on, before anything is written or sent: a malformed `repo_id`, `create_pr`
    with a `revision` other than `main`, no token. Returns the repo id and the token."""
    _check_revision(revision, create_pr)
    return _check_repo_id(repo_id), _require_token(token)


def _check_repo_id(repo_id: str) -> str:
    """Validates a repo id, re-raising huggingface_hub's error as a `ValueError` that names the id."""
    if not isinstance(repo_id, str):
        raise ValueError(f"`repo_id` must be a string like 'namespace/name', got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except ValueError as err:  # HFValidationError
        raise ValueError(f"Invalid Hub repo id {repo_id!r}: {err}") from err
    return repo_id


def _check_revision(revision: str | None, create_pr: bool) -> None:
    if create_pr and revision not in (None, "main"):
        raise ValueError(
            f"`create_pr=True` opens a pull request against `main`; it cannot be combined with revision={revision!r}."
        )


def _require_token(token: str | bool | None) -> str:
    if token is False or (token is None and get_token() is None):
        raise LocalTokenNotFoundError(_MISSING_TOKEN_MESSAGE)
    return token if isinstance(token, str) else get_token()


__all__ = ["check_upload_target", "resolve_directory", "upload_folder"]
