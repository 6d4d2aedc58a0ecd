"""Index refresh during REALM pre-training: re-embed the corpus with the current document tower and swap the index.

Two modes, as in the paper (section 3.3):

- synchronous: every `every_n_steps` steps all Accelerate processes stop, embed a share of the corpus each
  ([`embed_corpus`] gathers the shares), and continue with the new index;
- asynchronous: a background thread of the main process embeds the corpus from a snapshot of the weights while
  training continues, like the paper's separate index-builder job, and the new index is swapped in at the first step
  boundary after it is ready (all processes swap at the same step).

Refreshed indexes can be saved (`save_dir`), so a resumed run reloads the index it was using.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from .embedding import embed_corpus
from .fingerprint import compute_embedder_fingerprint
from .index import RealmIndex


logger = logging.get_logger(__name__)


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
    index: RealmIndex,
    tokenizer,
    accelerator=None,
    batch_size: int = 128,
    show_progress: bool = False,
) -> RealmIndex:
    """Re-embeds `index.corpus` with `embedder` (split over the Accelerate processes) and returns the new index.

    Every process returns the same index; `index` itself is unchanged.
    """
    embeddings = embed_corpus(
        embedder, index.corpus, tokenizer, batch_size=batch_size, accelerator=accelerator, show_progress=show_progress
    )
    return index.refresh(embeddings, embedder_fingerprint=compute_embedder_fingerprint(embedder), show_progress=False)


@dataclass
class RefreshRecord:
    """What a refresh produced: the step whose weights were embedded, how long it took, and the index."""

    step: int
    seconds: float
    index: RealmIndex = field(repr=False)


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

    def start(self, embedder: torch.nn.Module, index: RealmIndex, step: int) -> bool:
        """Starts a refresh from a copy of `embedder`'s current weights; returns False if one is still running."""
        if self.busy:
            return False
        snapshot = copy.deepcopy(embedder).eval()
        if self.device is not None:
            snapshot.to(self.device)
        for param in snapshot.parameters():
            param.requires_grad_(False)

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

    def wait(self, timeout: float | None = None) -> RefreshRecord | None:
        """Blocks until the running refresh ends, then behaves like [`~AsyncIndexRefresher.poll`]."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.poll()


class IndexRefreshCallback(TrainerCallback):
    """Refreshes the retriever's index of a [`RealmForPreTraining`] trained with the HF `Trainer`.

    Args:
        retriever ([`RealmRetriever`]): The retriever whose index is refreshed (the model's).
        tokenizer: The corpus tokenizer.
        schedule ([`IndexRefreshSchedule`]): When to refresh.
        asynchronous (`bool`): Refresh in a background thread (swap at the first step after it finishes).
        batch_size (`int`): Blocks per forward pass when embedding.
        save_dir (`str`, *optional*): Save each refreshed index to `save_dir/step-<N>`.
    """

    def __init__(
        self,
        retriever,
        tokenizer,
        schedule: IndexRefreshSchedule | None = None,
        asynchronous: bool = False,
        batch_size: int = 128,
        save_dir: str | None = None,
    ):
        self.retriever = retriever
        self.tokenizer = tokenizer
        self.schedule = schedule or IndexRefreshSchedule()
        self.refresher = AsyncIndexRefresher(tokenizer, batch_size) if asynchronous else None
        self.batch_size = batch_size
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.last_refresh_step = 0
        self.history: list[dict] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        embedder = _unwrap(model).embedder
        step = state.global_step
        if self.refresher is not None:
            record = self.refresher.poll()
            if record is not None:
                self._swap(record, step)
            if self.schedule.should_refresh(step):
                self.refresher.start(embedder, self.retriever.index, step)
        elif self.schedule.should_refresh(step):
            began = time.perf_counter()
            new_index = refresh_index(embedder, self.retriever.index, self.tokenizer, batch_size=self.batch_size)
            self._swap(RefreshRecord(step=step, seconds=time.perf_counter() - began, index=new_index), step)
        state.log_history.append({"step": step, "index_staleness": step - self.last_refresh_step})
        return control

    def _swap(self, record: RefreshRecord, step: int) -> None:
        self.retriever.index = record.index
        self.last_refresh_step = record.step
        if self.save_dir is not None:
            record.index.save_pretrained(self.save_dir / f"step-{record.step}")
        self.history.append({"step": step, "weights_step": record.step, "refresh_seconds": record.seconds})
        logger.info(f"Index refreshed at step {step} (weights of step {record.step}, {record.seconds:.1f}s).")


def _unwrap(model):
    return getattr(model, "module", model)
