"""Index refresh during REALM pre-training: re-embed the corpus with the current document tower and swap the index.

Two modes, as in the paper (section 3.3):

- synchronous: every `every_n_steps` steps all Accelerate processes stop, embed a share of the corpus each
  ([`embed_corpus`] gathers the shares), and continue with the new index;
- asynchronous: a background thread of the main process embeds the corpus from a snapshot of the weights while
  training continues, and the new index is swapped in at the first step boundary after it is ready (all processes
  swap at the same step);
- external: the paper's separate index-builder job ([`~realm_hf.training.index_builder.run_index_builder`],
  `realm-hf index-builder --watch OUTPUT_DIR`, on its own devices): every `every_n_steps` steps the trainer exports
  its document tower to `save_dir/exports/step-<N>`; the builder embeds the corpus with the newest export and
  publishes `save_dir/step-<N>`; the trainer swaps in the newest published index at a step boundary (all processes at
  the same step). Training never waits for the builder: without one it keeps the index it has.

[`IndexRefresher`] is the one policy both training paths use (`train_realm` and, for the HF `Trainer`,
[`~realm_hf.training.callbacks.IndexRefreshCallback`]): when to refresh, how the new index is swapped into the
retriever (at a step boundary, on every process at the same step), and where it is saved (`save_dir/step-<N>`, so a
resumed run reloads the index it was using).
"""

from __future__ import annotations

import copy
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import broadcast

from ..file_utils import atomic_directory
from ..logging import get_logger
from ..run_layout import EXPORTS_DIR, numbered_dirs, step_dir
from .index_format import is_saved_index
from .loading import load_index
from .protocols import RefreshableIndex


logger = get_logger(__name__)


@dataclass
class IndexRefreshSchedule:
    """When to refresh the index.

    Args:
        every_n_steps (`int`, defaults to 500): Refresh period in optimizer steps (the paper refreshed about every
            500 steps); 0 never refreshes (a stale index).
        first_step (`int`, defaults to 0): No refresh before this step.
    """

    every_n_steps: int = 500
    first_step: int = 0

    def __post_init__(self):
        if self.every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {self.every_n_steps}.")

    def should_refresh(self, step: int) -> bool:
        return self.every_n_steps > 0 and step > 0 and step >= self.first_step and step % self.every_n_steps == 0


def refresh_index(
    embedder: torch.nn.Module,
    index: RefreshableIndex,
    tokenizer,
    accelerator=None,
    batch_size: int = 128,
    show_progress: bool = False,
) -> RefreshableIndex:
    """Re-embeds `index.corpus` with `embedder` and returns the new index (`index.refresh_from`): a plain index is
    embedded split over the Accelerate processes, every process getting the whole index; a collective (sharded) one
    shard by shard, each process re-embedding only its own blocks. `index` itself is unchanged."""
    return index.refresh_from(
        embedder, tokenizer, batch_size=batch_size, accelerator=accelerator, show_progress=show_progress
    )


#: The subfolder of a saved index that holds the query tower which searches it (snapshot search).
QUERY_SNAPSHOT_DIR = "query_tower"


def frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` in eval mode whose parameters require no gradient (a snapshot of its current weights)."""
    snapshot = copy.deepcopy(module).eval()
    for param in snapshot.parameters():
        param.requires_grad_(False)
    return snapshot


def export_document_tower(embedder: torch.nn.Module, tokenizer, save_dir: str | os.PathLike, step: int) -> Path:
    """Saves the document tower of step `step` and its tokenizer for the index builder, atomically, as
    `save_dir/exports/step-<step>`; older exports but the newest two are deleted (the builder only wants the newest)."""
    exports = Path(save_dir) / EXPORTS_DIR
    target = step_dir(exports, step)
    with atomic_directory(target) as tmp:
        embedder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    for old in sorted(export_steps(save_dir))[:-2]:
        shutil.rmtree(step_dir(exports, old), ignore_errors=True)
    return target


def export_steps(save_dir: str | os.PathLike) -> list[int]:
    """The steps of the complete document-tower exports in `save_dir/exports`."""
    return [step for step, _ in numbered_dirs(Path(save_dir) / EXPORTS_DIR, complete=_has_config)]


def published_index_steps(save_dir: str | os.PathLike) -> list[int]:
    """The steps of the complete indexes in `save_dir` (`step-<N>` with its config, or a sharded index's manifest)."""
    return [step for step, _ in numbered_dirs(save_dir, complete=is_saved_index)]


def _has_config(path: Path) -> bool:
    return (path / "config.json").is_file()


@dataclass
class RefreshRecord:
    """What a refresh produced: the step whose weights were embedded, how long it took, and the index."""

    step: int
    seconds: float
    index: RefreshableIndex = field(repr=False)


class AsyncIndexRefresher:
    """Re-embeds the corpus in a background thread from a snapshot of the document tower.

    Args:
        tokenizer: Supplies the special token ids.
        batch_size (`int`): Blocks per forward pass of the background embedding.
        device (`str` or `torch.device`, *optional*): Where the snapshot runs (defaults to the embedder's device).
    """

    def __init__(self, tokenizer, batch_size: int = 128, device: str | torch.device | None = None):
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = device
        self._thread: threading.Thread | None = None
        self._result: RefreshRecord | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, embedder: torch.nn.Module, index: RefreshableIndex, step: int) -> bool:
        """Starts a refresh from a copy of `embedder`'s current weights; returns False if one is still running."""
        if self.busy:
            return False
        snapshot = frozen_copy(embedder)
        if self.device is not None:
            snapshot.to(self.device)

        def work():
            try:
                began = time.perf_counter()
                new_index = refresh_index(snapshot, index, self.tokenizer, batch_size=self.batch_size)
                self._result = RefreshRecord(step=step, seconds=time.perf_counter() - began, index=new_index)
            except BaseException as err:  # surfaced to the training loop by `poll`
                self._error = err

        self._result, self._error = None, None
        self._thread = threading.Thread(target=work, name=f"realm-index-refresh-{step}", daemon=True)
        self._thread.start()
        return True

    def poll(self) -> RefreshRecord | None:
        """The finished refresh, once (None while running or idle). Re-raises an error of the background work."""
        if self.busy:
            return None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("The background index refresh failed; the previous index stays in service.") from error
        result, self._result = self._result, None
        return result

    def join(self, timeout: float | None = None) -> None:
        """Blocks until the running refresh ends; its result stays for the next [`~AsyncIndexRefresher.poll`]."""
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> RefreshRecord | None:
        """Blocks until the running refresh ends, then behaves like [`~AsyncIndexRefresher.poll`]."""
        self.join(timeout)
        return self.poll()


class IndexRefresher:
    """Keeps a retriever's index fresh during training: the one refresh, swap and save policy.

    Call [`~IndexRefresher.step_end`] after every optimizer step. On a scheduled step, a synchronous refresher
    re-embeds the corpus with the current document tower (split over the Accelerate processes) and swaps the new index
    into `retriever`; an asynchronous one starts a background refresh from a snapshot of the weights (main process)
    and swaps its result in at the first step boundary after it finishes, on every process at the same step: the main
    process broadcasts the step, saves the index to `save_dir`, and the other processes load it from there.

    Args:
        retriever ([`RealmRetriever`]):
            The retriever whose `index` is replaced (the model's).
        tokenizer:
            The corpus tokenizer (special token ids).
        schedule ([`IndexRefreshSchedule`], *optional*):
            When to refresh (default: every 500 steps).
        asynchronous (`bool`, *optional*, defaults to `False`):
            Refresh in a background thread while training continues.
        batch_size (`int`, *optional*, defaults to 128):
            Blocks per forward pass when embedding.
        accelerator (`accelerate.Accelerator`, *optional*):
            Splits synchronous embedding over the processes and synchronises asynchronous swaps; without one, every
            process refreshes on its own.
        save_dir (`str` or `os.PathLike`, *optional*):
            Where indexes are saved, as `save_dir/step-<N>` (N: the step whose weights embedded the corpus). Needed by
            asynchronous refresh over several processes.
        save_every_refresh (`bool`, *optional*, defaults to `False`):
            Save each new index when it is swapped in (otherwise only when [`~IndexRefresher.save`] is called, for
            example with each checkpoint).
        external (`bool`, *optional*, defaults to `False`):
            Leave embedding to a separate index builder: export the document tower on scheduled steps and swap in
            the indexes the builder publishes in `save_dir` (needs a `save_dir`; not with `asynchronous`).
        query_tower (`torch.nn.Module`, *optional*):
            The live query tower, for snapshot search ([`StaleIndexRetriever`] with a `search_query_tower`): a frozen
            copy of it is taken whenever the document tower is snapshotted for a new index (at a synchronous refresh,
            when a background refresh starts, at an export), and swapped in with that index, so that every index is
            searched with the query tower of its own weights. Saved with the index as `query_tower/`, and loaded
            back on resume.

    Attributes:
        index_step (`int`): The step whose weights embedded the index in service (0: the initial index); the index
            is `step - index_step` steps stale.
    """

    def __init__(
        self,
        retriever,
        tokenizer,
        schedule: IndexRefreshSchedule | None = None,
        asynchronous: bool = False,
        batch_size: int = 128,
        accelerator=None,
        save_dir: str | os.PathLike | None = None,
        save_every_refresh: bool = False,
        external: bool = False,
        query_tower: torch.nn.Module | None = None,
    ):
        if query_tower is not None and not hasattr(retriever, "search_query_tower"):
            raise ValueError("query_tower (snapshot search) needs a retriever that searches with a snapshot.")
        if external and (save_dir is None or asynchronous):
            raise ValueError("External refresh needs a save_dir (where the builder publishes) and excludes async.")
        if save_every_refresh and save_dir is None:
            raise ValueError("save_every_refresh=True needs a save_dir.")
        if asynchronous and retriever.index.is_collective:
            raise ValueError(
                "A collective (sharded) index is refreshed synchronously, shard by shard (index_refresh_mode='sync')."
            )
        if asynchronous and accelerator is not None and accelerator.num_processes > 1 and save_dir is None:
            raise ValueError("Asynchronous refresh over several processes needs a save_dir to share the new index.")
        self.retriever = retriever
        self.tokenizer = tokenizer
        self.schedule = schedule or IndexRefreshSchedule()
        self.batch_size = batch_size
        self.accelerator = accelerator
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.save_every_refresh = save_every_refresh
        self.background = AsyncIndexRefresher(tokenizer, batch_size) if asynchronous else None
        self.external = external
        self.index_step = 0
        self.query_tower = query_tower
        self._snapshots: dict[int, torch.nn.Module] = {}
        if query_tower is not None and retriever.search_query_tower is None:
            retriever.search_query_tower = frozen_copy(query_tower)  # the initial index's own weights

    def step_end(self, embedder: torch.nn.Module, step: int) -> RefreshRecord | None:
        """Refreshes or swaps as the schedule says after optimizer step `step`; returns the refresh swapped in, if
        any."""
        if self.query_tower is not None and (self.background is not None or self.external):
            if self.schedule.should_refresh(step):  # every process, whichever runs the refresh
                self._snapshots[step] = frozen_copy(self.query_tower)
        if self.background is not None:
            record = self._poll_background(embedder, step)
        elif self.external:
            record = self._poll_external(embedder, step)
        elif self.schedule.should_refresh(step):
            record = self._refresh(embedder, step)
        else:
            record = None
        if record is not None:
            self._swap_in(record)
            if self.save_every_refresh:
                self.save()
            logger.info(f"Index refreshed at step {step} (weights of step {record.step}, {record.seconds:.1f}s).")
        return record

    def refresh_now(self, embedder: torch.nn.Module, step: int) -> RefreshRecord:
        """Re-embeds the corpus with `embedder` (the weights of step `step`) now, synchronously whatever the mode
        (after any background refresh has ended), and swaps the new index in: the final refresh of a run whose last
        scheduled one was earlier, so that the saved model and its index match. Collective where the index is."""
        self.wait()
        record = self._refresh(embedder, step)
        if self.query_tower is not None:
            self._snapshots[step] = frozen_copy(self.query_tower)
        self._swap_in(record)
        logger.info(f"Index re-embedded with the weights of step {step} ({record.seconds:.1f}s).")
        return record

    def _swap_in(self, record: RefreshRecord) -> None:
        """Puts `record`'s index (and, for snapshot search, the query tower of its weights) into service."""
        self.retriever.index = record.index
        self.index_step = record.step
        if self.query_tower is not None:
            snapshot = self._snapshots.pop(record.step, None)
            if snapshot is None:  # a synchronous refresh: the weights it embedded are the current ones
                if self.background is not None or self.external:
                    logger.warning(
                        f"No snapshot of the query tower of step {record.step} (its export predates a resume?): "
                        "the index swapped in is searched with the current query tower."
                    )
                snapshot = frozen_copy(self.query_tower)
            self.retriever.search_query_tower = snapshot
            self._snapshots = {step: tower for step, tower in self._snapshots.items() if step > record.step}

    def _refresh(self, embedder: torch.nn.Module, step: int) -> RefreshRecord:
        began = time.perf_counter()
        index = refresh_index(
            embedder, self.retriever.index, self.tokenizer, self.accelerator, batch_size=self.batch_size
        )
        return RefreshRecord(step=step, seconds=time.perf_counter() - began, index=index)

    def index_dir(self, step: int) -> Path:
        """Where the index embedded with the weights of `step` is saved: `save_dir/step-<step>`."""
        if self.save_dir is None:
            raise ValueError("IndexRefresher needs a save_dir to save or load indexes.")
        return step_dir(self.save_dir, step)

    def save(self) -> Path:
        """Saves the index in service as `save_dir/step-<index_step>` (main process, once) and returns the path."""
        target = self.index_dir(self.index_step)
        saved = is_saved_index(target)
        if self.retriever.index.is_collective:
            if not saved:  # every process writes its own part
                self.retriever.index.save_pretrained(target)
        elif self._is_main_process and not saved:
            self.retriever.index.save_pretrained(target)
        snapshot_dir = target / QUERY_SNAPSHOT_DIR
        if self.query_tower is not None and self._is_main_process and not snapshot_dir.is_dir():
            with atomic_directory(snapshot_dir) as staging:
                self.retriever.search_query_tower.save_pretrained(staging)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        return target

    def resume(self, index_step: int) -> None:
        """Swaps in the index saved as `save_dir/step-<index_step>` (the one a checkpoint was trained with)."""
        self.retriever.index = self._load(index_step)
        self.index_step = index_step
        if self.query_tower is not None:
            snapshot_dir = self.index_dir(index_step) / QUERY_SNAPSHOT_DIR
            if not snapshot_dir.is_dir():
                raise FileNotFoundError(
                    f"{snapshot_dir} is missing: the query tower that searches this index (snapshot search) was not "
                    "saved with it, so the run cannot resume as it trained."
                )
            snapshot = (
                type(self.query_tower).from_pretrained(snapshot_dir).to(next(self.query_tower.parameters()).device)
            )
            self.retriever.search_query_tower = frozen_copy(snapshot)

    def _load(self, step: int):
        """The index saved as `save_dir/step-<step>`, loaded as the one in service is (sharded over the processes if
        it is)."""
        return load_index(self.index_dir(step), sharded=self.retriever.index.is_collective)

    def wait(self) -> None:
        """Waits for a running background refresh to end (its result is dropped)."""
        if self.background is not None:
            self.background.wait()

    @property
    def _is_main_process(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    def _poll_external(self, embedder: torch.nn.Module, step: int) -> RefreshRecord | None:
        """Exports the document tower on scheduled steps, and loads the newest index the builder has published."""
        newest = -1
        if self._is_main_process:
            if self.schedule.should_refresh(step):
                export_document_tower(embedder, self.tokenizer, self.save_dir, step)
            newest = max(published_index_steps(self.save_dir), default=-1)
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            newest = int(broadcast(torch.tensor([newest], device=self.accelerator.device), from_process=0).item())
        if newest <= self.index_step:
            return None
        began = time.perf_counter()
        return RefreshRecord(step=newest, seconds=time.perf_counter() - began, index=self._load(newest))

    def _poll_background(self, embedder: torch.nn.Module, step: int) -> RefreshRecord | None:
        record = None
        if self._is_main_process:
            record = self.background.poll()
            if self.schedule.should_refresh(step):
                self.background.start(embedder, self.retriever.index, step)
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return record
        ready = torch.tensor([record.step if record is not None else -1], device=self.accelerator.device)
        ready = int(broadcast(ready, from_process=0).item())
        if ready < 0:
            return None
        path = self.index_dir(ready)
        if self.accelerator.is_main_process:
            record.index.save_pretrained(path)
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            record = RefreshRecord(step=ready, seconds=0.0, index=self._load(ready))
        return record
