"""The one optimisation recipe of realm_hf's training loops (REALM pre-training, the ICT warm start, the fine-tuning
scripts): BERT's parameter groups, the optimizer and learning-rate schedule a `TrainingArguments` names, and the
Accelerator they run under."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from transformers import Trainer, TrainingArguments, get_scheduler


def parameter_groups(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float,
    learning_rates: Mapping[str, float] | None = None,
) -> list[dict]:
    r"""
    AdamW parameter groups as BERT is trained: no weight decay on biases and layer-norm weights, and a learning rate of
    its own for every parameter whose name starts with a prefix of `learning_rates`.

    Args:
        model (`torch.nn.Module`): Its parameters that require gradients are grouped; frozen ones are left out.
        learning_rate (`float`): Learning rate of the parameters no prefix matches.
        weight_decay (`float`): Weight decay of the matrices (parameters of 2 or more dimensions, layer norms aside).
        learning_rates (`Mapping[str, float]`, *optional*): Parameter-name prefix -> learning rate (for example
            `{"embedder.": 1e-5}`); the first matching prefix wins.

    Returns:
        `list[dict]`: `{"params", "lr", "weight_decay"}` groups, in the order their first parameter appears.
    """
    learning_rates = dict(learning_rates or {})
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        lr = next((lr for prefix, lr in learning_rates.items() if name.startswith(prefix)), learning_rate)
        groups.setdefault((lr, 0.0 if no_decay else weight_decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]


def make_optimizer(
    model: torch.nn.Module, args: TrainingArguments, learning_rates: Mapping[str, float] | None = None
) -> torch.optim.Optimizer:
    """The optimizer `args.optim` names (through the `Trainer`'s own mapping: `adamw_torch`, `sgd`, ...) over
    [`parameter_groups`]: no weight decay on biases and norms, `learning_rates` by parameter-name prefix."""
    groups = parameter_groups(model, args.learning_rate, args.weight_decay, learning_rates)
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return optimizer_cls(groups, **optimizer_kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, args: TrainingArguments) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of `args.lr_scheduler_type` over `args.max_steps` optimizer steps, with
    `args.warmup_steps` (or ratio) of warm-up. It counts optimizer steps whatever the number of processes, so it is
    stepped by the loop (not handed to `Accelerator.prepare`)."""
    return get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.get_warmup_steps(args.max_steps),
        num_training_steps=args.max_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs or {},
    )


def step_period(value: float | None, max_steps: int) -> int:
    """A `TrainingArguments` step period (`logging_steps`, `save_steps`, `eval_steps`): N steps, or a fraction of
    `max_steps` when below 1; 0 or `None` is never (returned as 0)."""
    if not value:
        return 0
    return max(1, math.ceil(value * max_steps)) if value < 1 else int(value)


def make_accelerator(args: TrainingArguments) -> Accelerator:
    """The Accelerator of realm_hf's loops: `args`' gradient accumulation, mixed precision, CPU and trackers; a
    seedable data order; unused-parameter tolerant DDP (the embedders' and reader's MLM heads and the encoder's pooler
    take no part in pre-training)."""
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        cpu=args.use_cpu,
        log_with=args.report_to or None,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


__all__ = ["make_accelerator", "make_optimizer", "make_scheduler", "parameter_groups", "step_period"]
