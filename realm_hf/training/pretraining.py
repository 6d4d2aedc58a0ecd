"""REALM pre-training loop with Accelerate: multi-GPU / multi-node / CPU processes, gradient accumulation, mixed
precision, index refresh, atomic checkpoints and exact resume.

The loop is library code so that `examples/pretrain_realm.py` and the `realm-hf` command share it; model code stays
free of distributed plumbing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import TrainingArguments

from ..hub.model_card import pretraining_card_data
from ..hub.publish import save_final_model
from ..logging import get_logger
from ..retrieval.index import RealmIndex
from ..retrieval.loading import load_index
from ..retrieval.refresh import IndexRefresher, IndexRefreshSchedule
from ..retrieval.retriever import RealmRetriever
from ..run_layout import INDEX_DIR, numbered_dirs
from .checkpointing import (
    latest_checkpoint,
    load_checkpoint,
    load_trainer_state,
    resolve_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
)
from .optimization import make_accelerator, make_optimizer, make_scheduler, step_period
from .retrieval_strategy import (
    DEFAULT_RERANK_CANDIDATES,
    INDEX_SEARCH,
    RETRIEVER_TRAINING,
    apply_retrieval_strategy,
    check_retrieval_strategy,
    resolve_rerank_candidates,
)


logger = get_logger(__name__)


_REFRESH_MODES = ("sync", "async", "external")
#: `optim` values the REALM loops support: BERT's AdamW (plain or fused) and SGD.
_SUPPORTED_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "sgd")


@dataclass
class RealmPreTrainingArguments(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] of REALM pre-training ([`train_realm`], `realm-hf pretrain --corpus`,
    `examples/pretrain_realm.py`; the Hugging Face `Trainer` path takes plain `TrainingArguments`).

    Every `TrainingArguments` option that applies to a training loop works: `max_steps`, `per_device_train_batch_size`,
    `gradient_accumulation_steps`, `learning_rate`, `lr_scheduler_type`, `warmup_steps`, `weight_decay`, `optim`
    (`adamw_torch`, `adamw_torch_fused` or `sgd`), `adam_beta1/2`, `adam_epsilon`, `max_grad_norm`, `bf16` / `fp16`,
    `seed`, `logging_steps`, `save_strategy` / `save_steps` / `save_total_limit`, `resume_from_checkpoint` (a
    checkpoint directory, or `latest`), `report_to`, `use_cpu`, `disable_tqdm`. The loop works in optimizer steps
    (`max_steps` is required; epochs are not used). REALM's own options are below; the defaults that differ from
    `TrainingArguments`' follow REALM and BERT and are named in each field's help.
    """

    output_dir: str | None = field(
        default="realm-pretraining",
        metadata={"help": "Checkpoints, indexes, logs and final/ go here (REALM default)."},
    )
    max_steps: int = field(default=1000, metadata={"help": "Number of optimizer steps (REALM default: 1000)."})
    per_device_train_batch_size: int = field(
        default=32, metadata={"help": "Masked sentences per device and micro-batch (REALM default: 32)."}
    )
    learning_rate: float = field(
        default=3e-5, metadata={"help": "Peak learning rate of the encoder (REALM default: 3e-5, the paper's)."}
    )
    weight_decay: float = field(
        default=0.01,
        metadata={"help": "AdamW weight decay, not on biases and layer norms (REALM default: 0.01, BERT's)."},
    )
    adam_epsilon: float = field(default=1e-6, metadata={"help": "AdamW epsilon (REALM default: 1e-6, BERT's)."})
    optim: str = field(
        default="adamw_torch",
        metadata={"help": "Optimizer: 'adamw_torch', 'adamw_torch_fused' or 'sgd' (REALM default: 'adamw_torch')."},
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps (REALM default: 10)."})
    save_steps: float = field(
        default=500,
        metadata={"help": "Checkpoint every N steps, and at the end (save_strategy='no': none; the final model is "
                  "always saved in output_dir/final)."},
    )  # fmt: skip
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept, older ones deleted (REALM default: 2)."}
    )
    eval_steps: float | None = field(
        default=None, metadata={"help": "Run train_realm's eval_fn every N steps and at the end (None: never)."}
    )
    retriever_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of the query and document embedders; defaults to learning_rate. A lower one "
            "keeps a warm-started retriever from drifting while the encoder learns to read."
        },
    )
    index_refresh_steps: int = field(default=500, metadata={"help": "Refresh the index every N steps; 0 = never."})
    index_refresh_mode: str = field(
        default="sync",
        metadata={
            "help": "'sync' (all processes re-embed), 'async' (a background thread) or 'external' (a separate "
            "`realm-hf index-builder --watch OUTPUT_DIR` job embeds; the newest index it publishes is swapped in).",
            "choices": list(_REFRESH_MODES),
        },
    )
    embed_batch_size: int = field(default=128, metadata={"help": "Blocks per forward pass when re-embedding."})
    retriever_training: str = field(
        default="both",
        metadata={
            "help": "'both': the query and document towers train (the index goes stale between refreshes); "
            "'query_side': the towers are untied and the document tower frozen, so the index built once is never "
            "stale and is never refreshed (Atlas' query-side training; no refresh cost at any corpus size).",
            "choices": list(RETRIEVER_TRAINING),
        },
    )
    index_search: str = field(
        default="auto",
        metadata={
            "help": "Which query tower searches the index: 'snapshot' (a frozen copy taken when the index in service "
            "was embedded, as REALM's own code; the candidates are then scored by the live towers) or 'live' (the "
            "one training; with a stale index it compares vectors of two encoders and undoes what REALM learns); "
            "the two are the same with an index refreshed every step. 'auto' (default): 'snapshot', or 'live' with "
            "retriever_training='query_side' (whose index is never stale).",
            "choices": list(INDEX_SEARCH),
        },
    )
    rerank_candidates: int | None = field(
        default=None,
        metadata={
            "help": "Over-retrieve this many blocks per sentence from the index, re-embed them with the live "
            "document tower (no gradient) and keep the best (Atlas' re-rank); 0: no re-ranking. Costs one "
            "document-tower pass over the distinct blocks of each batch (1.6-1.9x the step time measured). Default: "
            f"{DEFAULT_RERANK_CANDIDATES} when both towers train and the index is refreshed less often than every "
            "step (at a million documents, never refreshed, re-ranking 64 learned 44.9 percent top-1 where snapshot search "
            "alone learned 8.2 percent), else 0."
        },
    )
    final_index_refresh: bool = field(
        default=True,
        metadata={
            "help": "At the end, re-embed the corpus with the final document tower when the index in service is "
            "older (one more pass over the corpus), so that output_dir/final holds the index its model's document "
            "tower builds (load_realm refuses a model whose index another tower built)."
        },
    )
    save_submodels: bool = field(
        default=True,
        metadata={
            "help": "At the end, also save the embedder, encoder and scorer in the layout of the published "
            "google/realm-cc-news-pretrained-* checkpoints, in output_dir/submodels/."
        },
    )

    def __post_init__(self):
        if self.index_refresh_mode not in _REFRESH_MODES:
            raise ValueError(f"index_refresh_mode must be one of {_REFRESH_MODES}, got {self.index_refresh_mode!r}.")
        if self.max_steps < 1 or self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("max_steps, per_device_train_batch_size and gradient_accumulation_steps must be >= 1.")
        if self.index_refresh_steps < 0:
            raise ValueError(f"index_refresh_steps must be >= 0, got {self.index_refresh_steps}.")
        self.rerank_candidates = resolve_rerank_candidates(
            self.retriever_training, self.index_refresh_steps, self.rerank_candidates
        )
        check_retrieval_strategy(self.retriever_training, self.index_search, self.rerank_candidates)
        super().__post_init__()
        optim = getattr(self.optim, "value", self.optim)
        if optim not in _SUPPORTED_OPTIMIZERS:
            raise ValueError(f"REALM pre-training supports optim in {_SUPPORTED_OPTIMIZERS}, got {optim!r}.")

    @property
    def show_progress(self) -> bool:
        """Whether the loop shows progress bars (`not disable_tqdm`)."""
        return not self.disable_tqdm


def _optimizer(model: torch.nn.Module, args: RealmPreTrainingArguments) -> torch.optim.Optimizer:
    """[`make_optimizer`] with the retriever's towers at `retriever_learning_rate`."""
    retriever_lr = args.learning_rate if args.retriever_learning_rate is None else args.retriever_learning_rate
    return make_optimizer(model, args, {prefix: retriever_lr for prefix in _RETRIEVER_PREFIXES})


class _ConsumedCollatorState:
    """Checkpoints a collator as it was after the micro-batches the loop consumed (`consumed()`), not after a batch
    the DataLoader collated ahead, when the collator can tell (`state_dict_after`)."""

    def __init__(self, collator, consumed: Callable[[], int]):
        self.collator, self.consumed = collator, consumed

    def state_dict(self) -> dict:
        if hasattr(self.collator, "state_dict_after"):
            try:
                return self.collator.state_dict_after(self.consumed())
            except ValueError as err:  # collated elsewhere too (DataLoader workers, another caller)
                logger.warning(f"{err} Checkpointing its current state: a resumed run may mask differently.")
        return self.collator.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.collator.load_state_dict(state)


def train_realm(
    model,
    tokenizer,
    index: RealmIndex,
    train_dataset,
    data_collator: Callable,
    args: RealmPreTrainingArguments,
    eval_fn: Callable | None = None,
    accelerator: Accelerator | None = None,
) -> list[dict]:
    r"""
    Pre-trains a [`RealmForPreTraining`] with the marginal masked-LM loss, refreshing its knowledge index.

    Args:
        model ([`RealmForPreTraining`]): The model (its retriever is set here).
        tokenizer: The corpus tokenizer.
        index ([`RealmIndex`]): The initial knowledge index (built with the model's current document tower).
        train_dataset: Masked-LM examples for `data_collator` (e.g. from `realm_hf.training.masking.tag_salient_spans`).
        data_collator: E.g. [`DataCollatorForRealmPreTraining`]; if it has `state_dict`/`load_state_dict`, its state
            is checkpointed too.
        args ([`RealmPreTrainingArguments`]): Training arguments.
        eval_fn (`Callable`, *optional*): `eval_fn(model, retriever, step) -> dict` of metrics, called every
            `args.eval_steps` steps and at the end (with the unwrapped model in eval mode).
        accelerator (`Accelerator`, *optional*): Defaults to [`make_accelerator`]`(args)`.

    Returns:
        `list[dict]`: the logged history (on every process).
    """
    accelerator = accelerator or make_accelerator(args)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    strategy = apply_retrieval_strategy(
        model, RealmRetriever(index, tokenizer), args.retriever_training, args.index_search, args.rerank_candidates
    )
    retriever = strategy.retriever
    model.set_retriever(retriever)
    loader = DataLoader(
        train_dataset,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=data_collator,
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = _optimizer(model, args)
    scheduler = make_scheduler(optimizer, args)
    # The schedule counts optimizer steps whatever the number of processes, so it is not handed to `prepare` (which
    # would step it once per process); it is checkpointed with the rest of the state.
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    # Checkpointed with the model and optimizer, as JSON and safetensors (never pickled).
    stateful = {"scheduler": scheduler}
    if hasattr(data_collator, "state_dict") and hasattr(data_collator, "load_state_dict"):
        stateful["collator"] = _ConsumedCollatorState(data_collator, lambda: step * args.gradient_accumulation_steps)
    if accelerator.scaler is not None:
        stateful["grad_scaler"] = accelerator.scaler
    unwrapped = accelerator.unwrap_model(model)
    retriever_parameters = [p for n, p in unwrapped.named_parameters() if n.startswith(_RETRIEVER_PREFIXES)]
    if args.report_to:
        accelerator.init_trackers("realm_pretraining", config=args.to_sanitized_dict())
    logging_every, save_every = (
        step_period(args.logging_steps, args.max_steps),
        step_period(args.save_steps, args.max_steps),
    )
    eval_every = step_period(args.eval_steps, args.max_steps) if eval_fn is not None else 0
    saves_checkpoints = args.save_strategy != "no"

    refresher = IndexRefresher(
        retriever,
        tokenizer,
        # A frozen document tower never makes the index stale: nothing to refresh.
        IndexRefreshSchedule(args.index_refresh_steps if strategy.document_tower_trains else 0),
        asynchronous=args.index_refresh_mode == "async",
        batch_size=args.embed_batch_size,
        accelerator=accelerator,
        save_dir=output_dir / INDEX_DIR,
        external=args.index_refresh_mode == "external",
        query_tower=strategy.snapshot_query_tower,
    )
    step, history = 0, []
    checkpoint = resolve_checkpoint(output_dir, args.resume_from_checkpoint)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, accelerator, model, optimizer, stateful)
        step, history = state["step"], state["history"]
        refresher.resume(state["index_step"])
        logger.info(f"Resumed from {checkpoint} at step {step} (index of step {refresher.index_step}).")
    if step == 0:
        refresher.save()
    micro_per_epoch = len(loader)
    if micro_per_epoch == 0:
        raise ValueError("The training dataset yields no batch.")
    progress = tqdm(
        total=args.max_steps,
        initial=step,
        desc="REALM pre-training",
        disable=not (args.show_progress and accelerator.is_main_process),
    )

    def staleness(at: int) -> int:  # steps since the index's weights; an index of a frozen tower is never stale
        return at - refresher.index_step if strategy.document_tower_trains else 0

    window: list[dict] = []
    began = time.perf_counter()
    model.train()
    while step < args.max_steps:
        # Exact position in the data stream, so that a resumed run sees the batches the interrupted one would have.
        consumed = step * args.gradient_accumulation_steps
        epoch, skip = divmod(consumed, micro_per_epoch)
        loader.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                labels = batch["labels"]
                outputs = model(**batch)
                # Mean over the masked tokens of the *global* batch, whatever the number of processes.
                local_tokens = (labels != -100).sum().float()
                global_tokens = accelerator.reduce(local_tokens.detach().clone(), reduction="sum")
                loss = outputs.loss * local_tokens / global_tokens * accelerator.num_processes
                accelerator.backward(loss)
                retriever_grad_norm = _grad_norm(retriever_parameters) if accelerator.sync_gradients else None
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            window.append(_batch_stats(outputs, batch))
            if retriever_grad_norm is not None:
                window[-1]["retriever_grad_norm"] = retriever_grad_norm
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(1)

            refreshed = refresher.step_end(unwrapped.embedder, step)
            refresh_seconds = refreshed.seconds if refreshed is not None else None

            should_eval = bool(eval_every and (step % eval_every == 0 or step == args.max_steps))
            if (
                (logging_every and step % logging_every == 0)
                or step == args.max_steps
                or refresh_seconds is not None
                or should_eval
            ):
                record = _summarise(window, accelerator)
                record.update(step=step, index_staleness=staleness(step), lr=scheduler.get_last_lr()[0],
                              steps_per_second=step / max(time.perf_counter() - began, 1e-9))  # fmt: skip
                if refresh_seconds is not None:
                    record["index_refresh_seconds"] = refresh_seconds
                window = []
                if should_eval:
                    eval_began = time.perf_counter()
                    record.update(_evaluate(eval_fn, unwrapped, retriever, step, model))
                    record["eval_seconds"] = time.perf_counter() - eval_began
                history.append(record)
                accelerator.log(record, step=step)
                progress.set_postfix(loss=f"{record.get('loss', float('nan')):.3f}")
            if saves_checkpoints and ((save_every and step % save_every == 0) or step == args.max_steps):
                # The index a checkpoint was trained with is saved with it (not at every refresh: the refresh period
                # can be one step), so that a resumed run reloads it.
                refresher.save()
                save_checkpoint(output_dir, step, accelerator, model, optimizer, stateful,
                                {"index_step": refresher.index_step, "history": history})  # fmt: skip
                if accelerator.is_main_process:
                    _prune_indexes(output_dir, rotate_checkpoints(output_dir, args.save_total_limit))
                accelerator.wait_for_everyone()
            if step >= args.max_steps:
                break
    progress.close()
    refresher.wait()
    if args.final_index_refresh and strategy.document_tower_trains and refresher.index_step != step:
        refresher.refresh_now(unwrapped.embedder, step)
    # A sharded index is saved by every process, and read back as one index for the final model.
    sharded_dir = refresher.save() if retriever.index.is_collective else None
    _save_final_model(accelerator, unwrapped, tokenizer, retriever, args, history, sharded_dir)
    accelerator.end_training()
    return history


def _save_final_model(
    accelerator: Accelerator, model, tokenizer, retriever, args, history: list[dict], sharded_dir: Path | None = None
) -> None:
    """The trained model the HF way, in `output_dir/final`: `save_pretrained` weights and config, the tokenizer, the
    index it was trained with (`index/`; one plain index, read from `sharded_dir` when training used a sharded one)
    and a model card with the run's settings and logs (written atomically); with `save_submodels`, also the
    sub-models in the published checkpoints' layout in `output_dir/submodels`."""
    if accelerator.is_main_process:
        if sharded_dir is not None:
            retriever = RealmRetriever(load_index(sharded_dir), tokenizer)
        card = pretraining_card_data(
            "REALM pre-trained with realm_hf's `train_realm` (marginal masked-LM loss through retrieval).",
            args,
            history,
        )
        save_final_model(args.output_dir, model, tokenizer, retriever, card, save_submodels=args.save_submodels)
    accelerator.wait_for_everyone()


_RETRIEVER_PREFIXES = ("embedder.", "query_embedder.")


def _grad_norm(parameters: list[torch.nn.Parameter]) -> float:
    """Global norm of the gradients of `parameters` (before clipping): the size of the retrieval signal."""
    norms = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)).item() if norms else 0.0


def _batch_stats(outputs, batch) -> dict:
    stats = {"loss": outputs.loss.detach().float().item()}
    if outputs.masked_lm_correct is not None:
        stats["mlm_correct"] = outputs.masked_lm_correct.float().sum().item()
        stats["mlm_total"] = float(outputs.masked_lm_correct.numel())
    if outputs.retrieval_utility is not None:
        stats["retrieval_utility"] = outputs.retrieval_utility.float().item()
    if outputs.null_document_probability is not None:
        stats["null_document_probability"] = outputs.null_document_probability.float().item()
    return stats


def _summarise(window: list[dict], accelerator: Accelerator) -> dict:
    keys = sorted({k for w in window for k in w})
    sums = torch.tensor([sum(w.get(k, 0.0) for w in window) for k in keys] + [float(len(window))], dtype=torch.float64)
    sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu().tolist()
    totals, count = dict(zip(keys, sums[:-1])), max(sums[-1], 1.0)
    record = {k: v / count for k, v in totals.items() if k not in ("mlm_correct", "mlm_total")}
    if totals.get("mlm_total"):
        record["masked_lm_accuracy"] = totals["mlm_correct"] / totals["mlm_total"]
    return record


def _evaluate(eval_fn, unwrapped, retriever, step, model) -> dict:
    model.eval()
    try:
        with torch.no_grad():
            return eval_fn(unwrapped, retriever, step) or {}
    finally:
        model.train()


def _prune_indexes(output_dir: Path, kept_checkpoints: list[Path]) -> None:
    """Deletes the saved indexes that no kept checkpoint was trained with, the newest one aside."""
    kept_index_steps = {load_trainer_state(path)["index_step"] for path in kept_checkpoints}
    saved = numbered_dirs(output_dir / INDEX_DIR)
    for step, path in saved[:-1]:  # the newest index always stays
        if step not in kept_index_steps:
            shutil.rmtree(path, ignore_errors=True)


__all__ = ["RealmPreTrainingArguments", "latest_checkpoint", "make_accelerator", "train_realm"]
