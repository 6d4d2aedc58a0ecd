"""The layout of a training run's output directory, named in this one module.

```
output_dir/
    checkpoint-<N>/              training state after optimizer step N (`realm_hf.training.checkpointing`)
    indexes/step-<N>/            the index embedded with the weights of step N (a plain or a sharded index)
    indexes/exports/step-<N>/    the document tower of step N, exported for the separate index builder
    final/                       the trained model the Hugging Face way: weights, config, tokenizer, index, card
    submodels/                   embedder, encoder and scorer in the layout of the published checkpoints
```
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path


CHECKPOINT_PREFIX = "checkpoint-"
INDEX_DIR = "indexes"
#: Inside the index directory: where the trainer exports its document tower for the index builder.
EXPORTS_DIR = "exports"
FINAL_DIR = "final"
SUBMODELS_DIR = "submodels"
STEP_PREFIX = "step-"


def step_dir(parent: str | os.PathLike, step: int, prefix: str = STEP_PREFIX) -> Path:
    """`parent/<prefix><step>`."""
    return Path(parent) / f"{prefix}{step}"


def numbered_dirs(
    parent: str | os.PathLike, prefix: str = STEP_PREFIX, complete: Callable[[Path], bool] | None = None
) -> list[tuple[int, Path]]:
    """The `(step, path)` of the directories `parent/<prefix><step>` for which `complete(path)` holds, by step."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    found = [
        (int(m.group(1)), path)
        for path in parent.iterdir()
        if (m := re.fullmatch(rf"{re.escape(prefix)}(\d+)", path.name)) and (complete is None or complete(path))
    ]
    return sorted(found)


__all__ = [
    "CHECKPOINT_PREFIX",
    "EXPORTS_DIR",
    "FINAL_DIR",
    "INDEX_DIR",
    "STEP_PREFIX",
    "SUBMODELS_DIR",
    "numbered_dirs",
    "step_dir",
]
