"""Atomic file-system helpers shared by everything that writes a directory (index, converted checkpoints) or a file
that must never be seen half written (model cards)."""

import ctypes
import errno
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# renameat2 errors meaning "not offered here" (old kernel, or a file system without RENAME_EXCHANGE): fall back.
_EXCHANGE_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


def _exchange(first: Path, second: Path) -> bool:
    """Swaps two existing paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`).

    Returns `False`, having changed nothing, where the platform or the file system does not offer it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _EXCHANGE_UNSUPPORTED:
        return False
    raise OSError(code, f"Could not swap {first} and {second}: {os.strerror(code)}")


def replace_directory(tmp: Path, target: Path) -> None:
    """Moves the completely written directory `tmp` to `target`.

    Where the OS can swap two directories atomically (Linux), `tmp` and an existing `target` are exchanged in one
    step and the old version (now at `tmp`) is removed: a process killed at any point leaves either the old or the
    new version at `target`. Elsewhere an existing `target` is renamed aside first and removed after the swap; if the
    swap fails it is put back, so a reader finds either the old or the new version, never a partial one.
    """
    if not target.exists():
        os.replace(tmp, target)
        return
    if _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a new, empty staging directory next to `target` to write a whole directory into; when the block ends
    without an exception the staging directory replaces `target` ([`replace_directory`]), so that `target` is either
    its previous version or all of the new one. If the block raises, the staging directory is removed and `target` is
    unchanged."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = None) -> Iterator[IO]:
    """Opens a temporary file next to `path` for writing; when the block ends without an exception it is flushed to
    disk and renamed over `path`, so that `path` holds either its previous content or all of the new one, never a part.

    If the block raises (or the process dies), `path` is unchanged; on an exception the temporary file is removed. An
    existing `path` keeps its permissions; a new one gets the default permissions of the umask.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode must be 'w' or 'wb', got {mode!r}.")
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding, **({} if "b" in mode else {"newline": ""})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            shutil.copymode(path, tmp_name)
        else:
            os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Writes `text` to `path` atomically ([`atomic_open`])."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
