"""Re-fitting the encoder's masked-LM head with its body frozen, before REALM pre-training from a BERT checkpoint.

A checkpoint's masked-LM head may not predict masked spans well (a SPLADE model's head was tuned for sparse
retrieval, MiniLM has none). Training the whole encoder on the corpus' masked sentences would fix that by memorising
the corpus, and an encoder that has memorised it has no reason to retrieve (REALM's signal is how much a retrieved
document helps). [`fit_masked_lm_head`] trains only the head's transform and output bias (the decoder is tied to the
frozen word embeddings), so the body's reading is what the checkpoint brings, and the head learns to decode it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..evaluation.reading import first_blocks, read_with_documents, rows_of_documents
from ..logging import get_logger


logger = get_logger(__name__)

_DOCUMENTS = ("own", "none")


@dataclass
class MaskedLMHeadFitting:
    """Settings of [`fit_masked_lm_head`].

    Args:
        max_steps (`int`, *optional*, defaults to 200): Optimizer steps.
        batch_size (`int`, *optional*, defaults to 32): Sentences per step.
        learning_rate (`float`, *optional*, defaults to 1e-3): Constant AdamW learning rate of the head.
        document (`str`, *optional*, defaults to `"own"`): What the encoder reads beside each masked sentence while
            the head trains: `"own"` (the first block of its own document, so that the head learns to decode what
            the body reads) or `"none"` (the null document: what the body predicts alone).
        train_encoder (`bool`, *optional*, defaults to `False`): Also train the encoder's body (a reading warm start:
            give it sentences of other text than the corpus the retriever will learn on, or it memorises the corpus).
        seed (`int`, *optional*, defaults to 0): Data order.
        disable_tqdm (`bool`, *optional*, defaults to `False`): Hide the progress bar.
    """

    max_steps: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-3
    document: str = "own"
    train_encoder: bool = False
    seed: int = 0
    disable_tqdm: bool = False

    def __post_init__(self):
        if self.document not in _DOCUMENTS:
            raise ValueError(f"document must be one of {_DOCUMENTS}, got {self.document!r}.")
        if self.max_steps < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("max_steps and batch_size must be >= 1 and learning_rate > 0.")


def masked_lm_head_parameters(model) -> list[torch.nn.Parameter]:
    """The parameters of the encoder's masked-LM head that are not tied to the word embeddings (its transform and
    output bias)."""
    tied = {id(p) for p in model.encoder.get_input_embeddings().parameters()}
    return [p for p in model.encoder.cls.parameters() if id(p) not in tied]


def fit_masked_lm_head(model, retriever, sentences, collator, settings: MaskedLMHeadFitting) -> list[dict]:
    r"""
    Trains the masked-LM head of a [`RealmForPreTraining`]'s encoder with everything else frozen (in place), or,
    with `settings.train_encoder`, the encoder's body too (a reading warm start).

    Args:
        model ([`RealmForPreTraining`]): Only `masked_lm_head_parameters(model)` change (and the encoder's body with
            `train_encoder`); every parameter keeps its `requires_grad` flag.
        retriever ([`RealmRetriever`]): Supplies the documents' tokens (its corpus has the sentences' `doc_id`s).
        sentences (`datasets.Dataset` or list): Tagged sentences, as [`DataCollatorForRealmPreTraining`] takes them.
        collator ([`DataCollatorForRealmPreTraining`]): Masks them.
        settings ([`MaskedLMHeadFitting`]): Steps, batch size, learning rate, what is read beside each sentence.

    Returns:
        `list[dict]`: `loss` and `masked_lm_accuracy` every 10 steps and at the end.
    """
    trained = masked_lm_head_parameters(model)
    if settings.train_encoder:
        trained += list(model.encoder.realm.parameters())
    flags = {id(p): p.requires_grad for p in model.parameters()}
    model.requires_grad_(False)
    for parameter in trained:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(trained, lr=settings.learning_rate, weight_decay=0.0)
    row_of_doc = first_blocks(retriever.index.corpus["doc_id"]) if settings.document == "own" else None
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
    progress = tqdm(total=settings.max_steps, desc="Masked-LM head", disable=settings.disable_tqdm)
    try:
        while step < settings.max_steps:
            for batch in loader:
                if row_of_doc is not None:
                    blocks = rows_of_documents(row_of_doc, batch["doc_ids"].tolist())
                else:
                    blocks = np.full(batch["input_ids"].size(0), -1)
                out = read_with_documents(model, retriever, batch, blocks)
                out.loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                step += 1
                progress.update(1)
                window.append((out.loss.item(), out.masked_lm_correct.float().mean().item()))
                if step % 10 == 0 or step == settings.max_steps:
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
        for parameter in model.parameters():
            parameter.requires_grad_(flags[id(parameter)])
    logger.info(f"Fitted the masked-LM head for {step} steps: {history[-1] if history else {}}.")
    return history


__all__ = ["MaskedLMHeadFitting", "fit_masked_lm_head", "masked_lm_head_parameters"]
