"""Overwrites a model card or a knowledge index and dies (SIGKILL) in the middle; used by test_interrupted_writes.py.

Usage:
    python interrupted_write.py card PATH                 # save_model_card(new text, PATH), killed mid-write
    python interrupted_write.py index DIRECTORY STAGE     # save a refreshed index over DIRECTORY, killed at STAGE

Index stages: `embeddings` (embeddings.npy half written), `before-swap` (every file written in the temporary directory,
before it replaces DIRECTORY), `after-swap` (new version in place, the old one not yet deleted).
"""

import errno
import io
import os
import signal
import sys
from pathlib import Path

import numpy as np


NEW_CARD = "---\nlicense: mit\nlibrary_name: realm_hf\n---\n\n# New card\n\n" + "Lorem ipsum dolor sit amet. " * 4000


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _InterruptedFile:
    """A text file whose first write stores half of the data, then fails (`kill=False`) or kills the process."""

    def __init__(self, handle, kill: bool):
        self._handle = handle
        self._kill = kill

    def write(self, text: str) -> int:
        self._handle.write(text[: len(text) // 2])
        self._handle.flush()
        os.fsync(self._handle.fileno())
        if self._kill:
            die()
        raise OSError(errno.ENOSPC, "No space left on device (injected by the test)")

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


def _opened_name(file) -> str:
    if isinstance(file, int):
        return os.readlink(f"/proc/self/fd/{file}")
    return os.fspath(file)


def interrupting_open(original, name_part: str, kill: bool):
    """A replacement for `io.open` (which `open`, pathlib and `os.fdopen` use) under which writing a text file whose
    name contains `name_part` is interrupted half-way."""

    def patched_open(file, mode="r", *args, **kwargs):
        handle = original(file, mode, *args, **kwargs)
        if "w" in mode and "b" not in mode and name_part in Path(_opened_name(file)).name:
            return _InterruptedFile(handle, kill)
        return handle

    return patched_open


def kill_card_write(path: Path) -> None:
    from realm_hf.hub.model_card import save_model_card

    io.open = interrupting_open(io.open, "README.md", kill=True)
    save_model_card(NEW_CARD, path)


def kill_index_save(directory: Path, stage: str) -> None:
    import realm_hf.file_utils
    import realm_hf.retrieval.index
    from realm_hf.retrieval.index import RealmIndex

    old = RealmIndex.from_pretrained(directory, mmap=False)
    new = old.refresh(-np.asarray(old.embeddings), show_progress=False)
    if stage == "embeddings":
        original_write = realm_hf.retrieval.index.write_embeddings

        def write_embeddings(embeddings, path):
            original_write(embeddings, path)
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])
            die()

        realm_hf.retrieval.index.write_embeddings = write_embeddings
    elif stage == "before-swap":
        realm_hf.retrieval.index.replace_directory = lambda tmp, target: die()
    elif stage == "after-swap":
        original_exchange = realm_hf.file_utils._exchange

        def exchange(first, second):
            swapped = original_exchange(first, second)
            die()
            return swapped

        realm_hf.file_utils._exchange = exchange
    else:
        raise ValueError(f"unknown stage {stage!r}")
    new.save_pretrained(directory)


def main() -> None:
    what, path = sys.argv[1], Path(sys.argv[2])
    if what == "card":
        kill_card_write(path)
    elif what == "index":
        kill_index_save(path, sys.argv[3])
    else:
        raise ValueError(f"unknown target {what!r}")
    sys.exit("the write was not interrupted")


if __name__ == "__main__":
    main()
