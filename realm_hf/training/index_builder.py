"""The separate index builder of the paper (section 3.3): a job of its own, on its own devices, that keeps re-embedding
the corpus with the trainer's newest document tower while training goes on.

A trainer with `index_refresh_mode="external"` ([`train_realm`]) exports its document tower every
`index_refresh_steps` steps to `OUTPUT_DIR/indexes/exports/step-<N>`. The builder waits for a new export, embeds every
block with it, and publishes `OUTPUT_DIR/indexes/step-<N>` (a [`RealmIndex`] over the same corpus, with the same FAISS
factory, written atomically: a published index is always complete); the trainer swaps in the newest published index
at a step boundary and records in each checkpoint the index step it trained with. Exports older than the one built
are skipped. Killing the builder never stops training (the trainer keeps its index); a restarted builder picks up the
newest export. It stops when the trainer has written `OUTPUT_DIR/final` (or after `max_builds`).

    realm-hf index-builder --watch OUTPUT_DIR
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from transformers import AutoTokenizer

from ..logging import get_logger
from ..modeling_realm import RealmEmbedder
from ..retrieval.loading import load_index
from ..retrieval.refresh import export_steps, published_index_steps
from ..run_layout import EXPORTS_DIR, FINAL_DIR, INDEX_DIR, step_dir


logger = get_logger(__name__)


def build_index_from_export(
    index_dir: str | os.PathLike,
    step: int,
    batch_size: int = 128,
    show_progress: bool = False,
    accelerator: Accelerator | None = None,
) -> Path:
    r"""
    Builds and publishes `index_dir/step-<step>` from the document tower exported as `index_dir/exports/step-<step>`,
    over the corpus (and with the search settings) of the newest index published in `index_dir`.

    With an `accelerator` of several processes (every one calls this), each embeds its share of the blocks on its
    device, and the main process builds the search index and publishes it.

    Returns:
        `Path`: the published index directory.
    """
    index_dir = Path(index_dir)
    export = step_dir(index_dir / EXPORTS_DIR, step)
    device = accelerator.device if accelerator is not None else "cpu"
    embedder = RealmEmbedder.from_pretrained(export).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    published = published_index_steps(index_dir)
    if not published:
        raise FileNotFoundError(f"{index_dir} has no published index to take the corpus from (the trainer's step-0).")
    base = load_index(step_dir(index_dir, published[-1]))
    index = base.refresh_from(
        embedder, tokenizer, batch_size=batch_size, accelerator=accelerator, show_progress=show_progress
    )
    target = step_dir(index_dir, step)
    if accelerator is None or accelerator.is_main_process:
        index.save_pretrained(target)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return target


def run_index_builder(
    output_dir: str | os.PathLike,
    poll_seconds: float = 2.0,
    batch_size: int = 128,
    max_builds: int | None = None,
    show_progress: bool = False,
    accelerator: Accelerator | None = None,
) -> list[dict]:
    r"""
    Watches a `train_realm` run with `index_refresh_mode="external"` and publishes an index for each newest export of
    its document tower, until the run has written `output_dir/final` (after this builder started) or `max_builds`
    indexes are built.

    Args:
        output_dir (`str` or `os.PathLike`): The trainer's `output_dir`.
        poll_seconds (`float`, *optional*, defaults to 2.0): How often to look for a new export.
        batch_size (`int`, *optional*, defaults to 128): Blocks per forward pass of the document tower.
        max_builds (`int`, *optional*): Stop after this many indexes.
        show_progress (`bool`, *optional*, defaults to `False`): Progress bars while embedding.
        accelerator (`Accelerator`, *optional*): The builder's own processes (`accelerate launch` / `torchrun`, on
            its own devices): the main process decides what to build, every process embeds its share of the blocks.

    Returns:
        `list[dict]`: one record per index built: `step` (of the document tower) and `seconds` (embedding and
        indexing).
    """
    output_dir = Path(output_dir)
    index_dir = output_dir / INDEX_DIR
    started = time.time()
    built: list[dict] = []
    failed: set[int] = set()
    main = accelerator is None or accelerator.is_main_process
    logger.info(f"Index builder watching {index_dir / EXPORTS_DIR}.")
    while max_builds is None or len(built) < max_builds:
        decision = [_next_build(output_dir, index_dir, started, failed) if main else None]
        if accelerator is not None and accelerator.num_processes > 1:
            decision = broadcast_object_list(decision, from_process=0)
        step = decision[0]
        if step == _FINISHED:
            break
        if step is None:
            time.sleep(poll_seconds)
            continue
        began = time.perf_counter()
        try:
            build_index_from_export(
                index_dir, step, batch_size=batch_size, show_progress=show_progress and main, accelerator=accelerator
            )
        except (OSError, ValueError) as err:  # e.g. the trainer deleted the export meanwhile: take the next one
            logger.warning(f"Could not build the index of step {step} ({err}); skipping that export.")
            failed.add(step)
            continue
        built.append({"step": step, "seconds": time.perf_counter() - began})
        logger.info(f"Published the index of step {step} in {built[-1]['seconds']:.1f}s.")
    return built


_FINISHED = -1


def _next_build(output_dir: Path, index_dir: Path, started: float, failed: set[int]) -> int | None:
    """The newest export not yet built (older ones are already stale), `_FINISHED` once the run has written its final
    model after this builder started and nothing is left, or None (wait)."""
    newest_published = max(published_index_steps(index_dir), default=-1)
    pending = [s for s in export_steps(index_dir) if s > newest_published and s not in failed]
    if pending:
        return pending[-1]
    final = output_dir / FINAL_DIR
    return _FINISHED if final.is_dir() and final.stat().st_mtime >= started else None
