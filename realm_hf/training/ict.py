"""The Inverse Cloze Task (ICT, Lee et al. 2019): REALM's retriever warm start.

A sentence of a block is the query; the block (without that sentence, most of the time) is its positive; the other
blocks of the batch are the negatives. Both towers are the [`RealmEmbedder`]s of a [`RealmForPreTraining`] (or any
module with `query_embedder` and `embedder`), so pre-training can start from random weights, from ICT, or from any
BERT checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import TrainingArguments

from ..logging import get_logger
from .optimization import make_accelerator, make_optimizer, make_scheduler, step_period


logger = get_logger(__name__)


def inverse_cloze_loss(query_embedder, block_embedder, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """In-batch softmax cross-entropy of the query-block scores, and the top-1 accuracy.

    Args:
        query_embedder, block_embedder ([`RealmEmbedder`]): The two towers (may be the same module).
        batch (`dict`): From [`DataCollatorForInverseClozeTask`] (`query_*`, `block_*`, `labels`).
    """
    query = query_embedder(
        input_ids=batch["query_input_ids"],
        attention_mask=batch["query_attention_mask"],
        token_type_ids=batch["query_token_type_ids"],
        return_dict=True,
    ).projected_score
    blocks = block_embedder(
        input_ids=batch["block_input_ids"],
        attention_mask=batch["block_attention_mask"],
        token_type_ids=batch["block_token_type_ids"],
        return_dict=True,
    ).projected_score
    scores = query @ blocks.T
    loss = torch.nn.functional.cross_entropy(scores.float(), batch["labels"])
    accuracy = (scores.argmax(-1) == batch["labels"]).float().mean().item()
    return loss, accuracy


class _InverseCloze(torch.nn.Module):
    """Both towers in one module, so that a distributed wrapper sees the whole forward pass."""

    def __init__(self, query_embedder, block_embedder):
        super().__init__()
        self.query = query_embedder
        self.block = block_embedder

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        return inverse_cloze_loss(self.query, self.block, batch)


@dataclass
class InverseClozeTaskArguments(TrainingArguments):
    """[`~transformers.TrainingArguments`] of [`train_inverse_cloze_task`] (ORQA used lr 1e-4, batch 4096, 100k steps
    on TPU). The loop honours `max_steps`, `per_device_train_batch_size`, `learning_rate`, `lr_scheduler_type`,
    `warmup_steps`, `weight_decay`, `adam_*`, `max_grad_norm`, `seed`, `logging_steps`, `use_cpu`, `bf16` / `fp16`
    and `disable_tqdm`; the defaults that differ from `TrainingArguments`' are named in each field's help."""

    output_dir: str | None = field(default="ict", metadata={"help": "Where logs would go (ICT default: 'ict')."})
    max_steps: int = field(default=1000, metadata={"help": "Number of optimizer steps (ICT default: 1000)."})
    per_device_train_batch_size: int = field(
        default=64,
        metadata={"help": "Sentences per device and step; the other blocks of the batch are the negatives (ICT "
                  "default: 64)."},
    )  # fmt: skip
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of both towers (ORQA: 1e-4)."})
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay, not on biases and layer norms (ICT default: 0.01)."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log the loss and in-batch accuracy every N steps."})

    def __post_init__(self):
        if self.max_steps < 1 or self.per_device_train_batch_size < 1:
            raise ValueError("max_steps and per_device_train_batch_size must be >= 1.")
        super().__post_init__()


def train_inverse_cloze_task(
    model, train_dataset, data_collator, args: InverseClozeTaskArguments, accelerator: Accelerator | None = None
) -> list[dict]:
    """Trains the query and document towers of `model` with the Inverse Cloze Task (in-place).

    Each process uses its own batch as negatives. Returns the logged history (`loss`, `ict_accuracy`).
    """
    accelerator = accelerator or make_accelerator(args)
    set_seed(args.seed)
    towers = _InverseCloze(model.query_embedder, model.embedder)
    loader = DataLoader(
        train_dataset,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        drop_last=len(train_dataset) >= args.per_device_train_batch_size,
        collate_fn=data_collator,
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = make_optimizer(towers, args)
    scheduler = make_scheduler(optimizer, args)
    # The schedule counts optimizer steps, whatever the number of processes: it is not handed to `prepare`.
    towers, optimizer, loader = accelerator.prepare(towers, optimizer, loader)
    history, window, step = [], [], 0
    logging_every = step_period(args.logging_steps, args.max_steps)
    progress = tqdm(
        total=args.max_steps, desc="ICT warm start", disable=args.disable_tqdm or not accelerator.is_main_process
    )
    towers.train()
    while step < args.max_steps:
        for batch in loader:
            loss, accuracy = towers(batch)
            accelerator.backward(loss)
            if args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(towers.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            progress.update(1)
            window.append((loss.item(), accuracy))
            if (logging_every and step % logging_every == 0) or step == args.max_steps:
                losses, accuracies = zip(*window)
                history.append(
                    {
                        "step": step,
                        "loss": sum(losses) / len(losses),
                        "ict_accuracy": sum(accuracies) / len(accuracies),
                    }
                )
                window = []
            if step >= args.max_steps:
                break
    progress.close()
    return history
