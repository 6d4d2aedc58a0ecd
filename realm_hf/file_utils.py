"""Atomic file-system helpers shared by everything that writes a directory (index, converted checkpoints)."""

import os
import shutil
import uuid
from pathlib import Path


def replace_directory(tmp: Path, target: Path) -> None:
    """Moves the completely written directory `tmp` to `target`.

    An existing `target` is renamed aside first and removed after the swap; if the swap fails it is put back, so a
    reader finds either the old or the new version, never a partial one.
    """
    if not target.exists():
        os.replace(tmp, target)
        return
    backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)
