"""The one reading loop: masked sentences read beside a given document, training the encoder's masked-LM head (its
body frozen) or the whole encoder (a reading warm start).

A checkpoint's masked-LM head may not predict masked spans well (a SPLADE model's head was tuned for sparse
retrieval, MiniLM has none). Training the whole encoder on the corpus' masked sentences would fix that by memorising
the corpus, and an encoder that has memorised it has no reason to retrieve (REALM's signal is how much a retrieved
document helps). [`fit_masked_lm_head`] trains only the head's transform and output bias (the decoder is tied to the
frozen word embeddings), so the body's reading is what the checkpoint brings, and the head learns to decode it. With
`train_encoder` it is the reading warm start (the embedded demo's, on worlds other than the one REALM learns on).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import TrainingArguments

from ..evaluation.reading import first_blocks, read_with_documents, rows_of_documents
from ..logging import get_logger
from .optimization import make_optimizer, make_scheduler


logger = get_logger(__name__)

_DOCUMENTS = ("own", "none")


@dataclass
class MaskedLMHeadFitting:
    """Settings of [`fit_masked_lm_head`]. The optimizer and schedule are the library's one recipe
    ([`make_optimizer`], [`make_scheduler`]: AdamW, no weight decay on biases and layer norms, transformers'
    schedules).

    Args:
        max_steps (`int`, *optional*, defaults to 200): Optimizer steps.
        batch_size (`int`, *optional*, defaults to 32): Sentences per step.
        learning_rate (`float`, *optional*, defaults to 1e-3): Peak AdamW learning rate.
        document (`str`, *optional*, defaults to `"own"`): What the encoder reads beside each masked sentence when
            `fit_masked_lm_head` is given no `evidence`: `"own"` (the first block of its own document, so that the
            head learns to decode what the body reads) or `"none"` (the null document: what the body predicts alone).
        train_encoder (`bool`, *optional*, defaults to `False`): Also train the encoder's body (a reading warm start:
            give it sentences of other text than the corpus the retriever will learn on, or it memorises the corpus).
        weight_decay (`float`, *optional*, defaults to 0.0): Weight decay of the matrices.
        lr_scheduler_type (`str`, *optional*, defaults to `"constant"`): A transformers schedule (`"linear"`, ...).
        warmup_steps (`int`, *optional*, defaults to 0): Warm-up steps of the schedule.
        max_grad_norm (`float`, *optional*): Clip the gradients' norm to this (default: no clipping).
        logging_steps (`int`, *optional*, defaults to 10): Log the mean loss and accuracy every N steps (and at the
            end).
        seed (`int`, *optional*, defaults to 0): Data order.
        disable_tqdm (`bool`, *optional*, defaults to `False`): Hide the progress bar.
    """

    max_steps: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-3
    document: str = "own"
    train_encoder: bool = False
    weight_decay: float = 0.0
    lr_scheduler_type: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = None
    logging_steps: int = 10
    seed: int = 0
    disable_tqdm: bool = False

    def __post_init__(self):
        if self.document not in _DOCUMENTS:
            raise ValueError(f"document must be one of {_DOCUMENTS}, got {self.document!r}.")
        if self.max_steps < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("max_steps and batch_size must be >= 1 and learning_rate > 0.")
        if self.warmup_steps < 0 or self.logging_steps < 1 or self.weight_decay < 0:
            raise ValueError("warmup_steps and weight_decay must be >= 0 and logging_steps >= 1.")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0 (or None: no clipping), got {self.max_grad_norm}.")

    def training_arguments(self) -> TrainingArguments:
        """The `TrainingArguments` that [`make_optimizer`] and [`make_scheduler`] read."""
        return TrainingArguments(
            max_steps=self.max_steps, learning_rate=self.learning_rate,
            weight_decay=self.weight_decay, lr_scheduler_type=self.lr_scheduler_type, warmup_steps=self.warmup_steps,
            report_to="none",
        )  # fmt: skip


def masked_lm_head_parameters(model) -> list[torch.nn.Parameter]:
    """The parameters of the encoder's masked-LM head that are not tied to the word embeddings (its transform and
    output bias)."""
    tied = {id(p) for p in model.encoder.get_input_embeddings().parameters()}
    return [p for p in model.encoder.cls.parameters() if id(p) not in tied]


def fit_masked_lm_head(
    model,
    retriever,
    sentences,
    collator,
    settings: MaskedLMHeadFitting,
    evidence: Callable[[Sequence[int]], Sequence[int]] | None = None,
) -> list[dict]:
    r"""
    Trains the masked-LM head of a [`RealmForPreTraining`]'s encoder with everything else frozen (in place), or,
    with `settings.train_encoder`, the encoder's body too (a reading warm start).

    Args:
        model ([`RealmForPreTraining`]): Only `masked_lm_head_parameters(model)` change (and the encoder's body with
            `train_encoder`); every parameter keeps its `requires_grad` flag.
        retriever ([`RealmRetriever`]): Supplies the documents' tokens (its corpus has the sentences' `doc_id`s).
        sentences (`datasets.Dataset` or list): Tagged sentences, as [`DataCollatorForRealmPreTraining`] takes them
            (repeated in a new order when `max_steps` needs more than one pass).
        collator ([`DataCollatorForRealmPreTraining`]): Masks them.
        settings ([`MaskedLMHeadFitting`]): Steps, batch size, optimizer and schedule, what is read beside each
            sentence.
        evidence (`Callable`, *optional*): From a batch's document ids, the id of the document read beside each
            sentence (the first block of it), for example the other document that states the same fact; default:
            `settings.document`.

    Returns:
        `list[dict]`: `step`, `loss` and `masked_lm_accuracy` every `settings.logging_steps` steps and at the end.
    """
    trained = masked_lm_head_parameters(model)
    if settings.train_encoder:
        trained += list(model.encoder.realm.parameters())
    flags = {id(p): p.requires_grad for p in model.parameters()}
    model.requires_grad_(False)
    for parameter in trained:
        parameter.requires_grad_(True)
    train_args = settings.training_arguments()
    optimizer = make_optimizer(model, train_args)  # the trained parameters only: the others are frozen
    scheduler = make_scheduler(optimizer, train_args)
    row_of_doc = None
    if evidence is not None or settings.document == "own":
        row_of_doc = first_blocks(retriever.index.corpus["doc_id"])
    loader = DataLoader(
        sentences,
        batch_size=settings.batch_size,
        shuffle=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(settings.seed),
    )
    was_training = model.training
    model.train(settings.train_encoder)  # a frozen body: no dropout in what the head learns to decode
    history, window, step = [], [], 0
    progress = tqdm(total=settings.max_steps, desc="Masked-LM reading", disable=settings.disable_tqdm)
    try:
        while step < settings.max_steps:
            for batch in loader:
                doc_ids = batch["doc_ids"].tolist()
                if row_of_doc is None:
                    blocks = np.full(len(doc_ids), -1)
                else:
                    blocks = rows_of_documents(row_of_doc, doc_ids if evidence is None else evidence(doc_ids))
                out = read_with_documents(model, retriever, batch, blocks)
                out.loss.backward()
                if settings.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trained, settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                progress.update(1)
                window.append((out.loss.item(), out.masked_lm_correct.float().mean().item()))
                if step % settings.logging_steps == 0 or step == settings.max_steps:
                    losses, accuracies = zip(*window)
                    history.append(
                        {
                            "step": step,
                            "loss": float(np.mean(losses)),
                            "masked_lm_accuracy": float(np.mean(accuracies)),
                        }
                    )
                    window = []
                if step >= settings.max_steps:
                    break
    finally:
        progress.close()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
        for parameter in model.parameters():
            parameter.requires_grad_(flags[id(parameter)])
    logger.info(f"Trained masked-LM reading for {step} steps: {history[-1] if history else {}}.")
    return history


__all__ = ["MaskedLMHeadFitting", "fit_masked_lm_head", "masked_lm_head_parameters"]
