"""Fine-tuning [`RealmForOpenQA`] on question/answer pairs with the [`~transformers.Trainer`], and evaluating it.

As in the REALM paper, the block embeddings stay fixed during fine-tuning (they live in the [`RealmIndex`], not in
the model's parameters) while the query embedder and the reader train. A question whose answers appear in none of
the retrieved blocks contributes zero loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import Trainer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import logging

from .inference import answer_questions
from .metrics.open_qa.open_qa import compute_open_qa_scores, exact_match_score, normalize_answer


logger = logging.get_logger(__name__)


@dataclass
class DataCollatorForRealmOpenQA:
    r"""
    Batches open-QA examples for [`RealmForOpenQA`].

    Each example has a `question` (`str`) and `answers` (`list[str]`, or a single `str`); other fields are ignored.
    The questions are tokenized as `[CLS] question [SEP]` and padded; the answers are tokenized without special
    tokens. Answers that tokenize to nothing are dropped, and a question without any usable answer keeps an empty
    list (it then contributes zero loss).

    `answer_ids` is a nested Python list, not a tensor, so train with `remove_unused_columns=False`; the
    [`~transformers.Trainer`] leaves non-tensors as they are when it moves a batch to the device.

    Args:
        tokenizer ([`PreTrainedTokenizerBase`]):
            The question tokenizer (the one of the model).
        max_question_length (`int`, *optional*, defaults to 64):
            Questions are truncated to this many tokens, special tokens included.

    Returns (when called on a list of examples):
        `dict` with `input_ids`, `attention_mask`, `token_type_ids` (`torch.LongTensor` of shape
        `(batch_size, question_len)`) and `answer_ids` (`list[list[list[int]]]`: per question, per answer, token ids).
    """

    tokenizer: PreTrainedTokenizerBase
    max_question_length: int = 64

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if len(examples) == 0:
            raise ValueError("DataCollatorForRealmOpenQA: got an empty list of examples.")
        questions = []
        for i, example in enumerate(examples):
            question = example.get("question")
            if question is not None and not isinstance(question, str):
                raise ValueError(f"DataCollatorForRealmOpenQA: example {i} has a non-string question {question!r}.")
            questions.append(question or "")
        batch = self.tokenizer(
            questions,
            padding=True,
            truncation=True,
            max_length=self.max_question_length,
            return_token_type_ids=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        answer_ids = [self.tokenize_answers(example.get("answers")) for example in examples]
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "token_type_ids": batch["token_type_ids"],
            "answer_ids": answer_ids,
        }

    def tokenize_answers(self, answers: str | Iterable[str] | None) -> list[list[int]]:
        """Token ids (no special tokens) of each answer, dropping answers that are empty after tokenization."""
        if answers is None:
            return []
        if isinstance(answers, str):
            answers = [answers]
        answers = [a for a in answers if isinstance(a, str) and a.strip()]
        if not answers:
            return []
        ids = self.tokenizer(answers, add_special_tokens=False)["input_ids"]
        return [list(a) for a in ids if len(a) > 0]


class RealmTrainer(Trainer):
    r"""
    A [`~transformers.Trainer`] for [`RealmForOpenQA`]: the loss is `outputs.reader_output.loss`, the sum of the
    marginal retrieval and reader losses averaged over the questions of the batch.

    Use it with [`DataCollatorForRealmOpenQA`] and `TrainingArguments(remove_unused_columns=False, ...)`. The block
    embeddings are not parameters of the model (they live in the index), so they stay fixed while the query embedder
    and the reader train, as in the paper's fine-tuning. When no question of a batch has its answer in a retrieved
    block the loss is zero; if it is then not attached to the graph, a zero that is (and gives zero gradients) is
    returned instead so that the backward pass does not fail.
    """

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Runs the model on the batch and returns the reader loss (and the outputs when `return_outputs`)."""
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            token_type_ids=inputs.get("token_type_ids"),
            answer_ids=inputs.get("answer_ids"),
            return_dict=True,
        )
        loss = outputs.reader_output.loss
        if loss is None:
            raise ValueError("RealmTrainer: the model returned no loss; does the batch have `answer_ids`?")
        if loss.dim() > 0:
            loss = loss.mean()
        if torch.is_grad_enabled() and not loss.requires_grad:
            loss = _zero_with_grad(model, loss)
        return (loss, outputs) if return_outputs else loss


def _zero_with_grad(model: torch.nn.Module, like: torch.Tensor) -> torch.Tensor:
    """A zero attached to every trainable parameter (zero gradients), so `backward` works on an all-zero batch."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        return like
    zero = sum(p.sum() * 0.0 for p in trainable)
    return zero.to(like.dtype)


def _answer_in_text(normalised_answers: list[str], normalised_text: str) -> bool:
    """Whether a normalised answer occurs in a normalised text as a sequence of whole words."""
    padded = f" {normalised_text} "
    return any(answer and f" {answer} " in padded for answer in normalised_answers)


def _as_columns(dataset: Any) -> tuple[list[Any], list[Any]]:
    """The `question` and `answers` columns of a `datasets.Dataset`, a dict of lists or a list of examples."""
    if isinstance(dataset, Mapping) or hasattr(dataset, "column_names"):
        return list(dataset["question"]), list(dataset["answers"])
    examples = list(dataset)
    return [e.get("question") for e in examples], [e.get("answers") for e in examples]


@torch.no_grad()
def _retrieve(model, tokenizer, questions: list[str], k: int, batch_size: int, max_length: int) -> np.ndarray:
    """Top-`k` block ids, shape `(len(questions), k)`, of non-empty questions (embedder in eval mode)."""
    rows = []
    for start in range(0, len(questions), batch_size):
        texts = questions[start : start + batch_size]
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batch = {key: value.to(model.device) for key, value in batch.items()}
        query = model.embedder(**batch, return_dict=True).projected_score
        _, ids = model.retriever.index.search(query.float().cpu().numpy(), k)
        rows.append(ids)
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, k), dtype=np.int64)


def evaluate_open_qa(
    model,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    batch_size: int = 16,
    k: int | None = None,
    max_question_length: int = 64,
    return_predictions: bool = False,
) -> dict[str, Any]:
    r"""
    Evaluates a [`RealmForOpenQA`] on questions with gold answers: retrieval recall and answer exact match / F1.

    Retrieval recall@n is the fraction of questions for which at least one of the top-n retrieved blocks contains a
    gold answer (block `text` of `model.retriever.index.corpus` and answers both normalised with
    [`~realm_hf.metrics.open_qa.normalize_answer`], the answer matched as whole words). Predictions come from
    [`~realm_hf.inference.answer_questions`] and are scored with
    [`~realm_hf.metrics.open_qa.compute_open_qa_scores`]. Empty questions, questions without answers and answers
    absent from every block simply count as wrong.

    Args:
        model ([`RealmForOpenQA`]): The model, with its retriever set. Its train/eval mode is restored afterwards.
        tokenizer ([`PreTrainedTokenizerBase`]): The question tokenizer.
        dataset: A `datasets.Dataset`, a dict of lists or a list of examples with `question` (`str`) and `answers`
            (`list[str]`).
        batch_size (`int`, *optional*, defaults to 16): Questions per forward pass.
        k (`int`, *optional*): Retrieval depth for `recall_at_k`; defaults to `model.config.reader_beam_size` (the
            blocks the reader sees at evaluation), capped at the corpus size.
        max_question_length (`int`, *optional*, defaults to 64): Questions are truncated to this many tokens.
        return_predictions (`bool`, *optional*, defaults to `False`): Also return the per-question predictions.

    Returns:
        `dict` with `exact_match` and `f1` (percentages in [0, 100]), `recall_at_1` and `recall_at_k` (fractions in
        [0, 1]), `k`, and the counts `num_questions`, `num_empty_questions`, `num_without_answers`,
        `num_exact_match`, `num_retrieved_at_1`, `num_retrieved_at_k`; with `return_predictions`, also `predictions`
        (one dict per question: `question`, `prediction`, `answers`, `exact_match`, `retrieved_at_1`,
        `retrieved_at_k`, `block_id`, `error`).
    """
    if model.retriever is None:
        raise ValueError("evaluate_open_qa needs a model with a retriever (`model.set_retriever(...)`).")
    questions, references = _as_columns(dataset)
    references = [[a] if isinstance(a, str) else [x for x in (a or []) if isinstance(x, str)] for a in references]
    num_questions = len(questions)
    corpus = model.retriever.index.corpus
    num_blocks = len(model.retriever.index)
    k = min(int(k or model.config.reader_beam_size), num_blocks)
    if k < 1:
        raise ValueError(f"evaluate_open_qa: k must be at least 1, got {k}.")

    valid = [i for i, q in enumerate(questions) if isinstance(q, str) and q.strip()]
    was_training = model.training
    model.eval()
    try:
        answers = answer_questions(
            model, tokenizer, list(questions), batch_size=batch_size, max_question_length=max_question_length
        )
        retrieved = _retrieve(
            model, tokenizer, [questions[i] for i in valid], k, batch_size, max_length=max_question_length
        )
    finally:
        model.train(was_training)

    texts_cache: dict[int, str] = {}

    def block_text(block_id: int) -> str:
        if block_id not in texts_cache:
            texts_cache[block_id] = normalize_answer(corpus[block_id].get("text", "") or "")
        return texts_cache[block_id]

    at_1 = [False] * num_questions
    at_k = [False] * num_questions
    for row, i in enumerate(valid):
        gold = [normalize_answer(a) for a in references[i]]
        if not any(gold):
            continue
        hits = [int(b) >= 0 and _answer_in_text(gold, block_text(int(b))) for b in retrieved[row]]
        at_1[i] = bool(hits[:1]) and hits[0]
        at_k[i] = any(hits)

    predictions = [a.answer if a.error is None else "" for a in answers]
    scores = compute_open_qa_scores(predictions, references)
    correct = [any(exact_match_score(p, g) for g in refs) for p, refs in zip(predictions, references)]
    denominator = max(num_questions, 1)
    result: dict[str, Any] = {
        "exact_match": float(scores["exact_match"]),
        "f1": float(scores["f1"]),
        "recall_at_1": sum(at_1) / denominator,
        "recall_at_k": sum(at_k) / denominator,
        "k": k,
        "num_questions": num_questions,
        "num_empty_questions": num_questions - len(valid),
        "num_without_answers": sum(1 for refs in references if not any(normalize_answer(a) for a in refs)),
        "num_exact_match": sum(correct),
        "num_retrieved_at_1": sum(at_1),
        "num_retrieved_at_k": sum(at_k),
    }
    if return_predictions:
        result["predictions"] = [
            {
                "question": questions[i],
                "prediction": predictions[i],
                "answers": references[i],
                "exact_match": correct[i],
                "retrieved_at_1": at_1[i],
                "retrieved_at_k": at_k[i],
                "block_id": answers[i].block_id,
                "error": answers[i].error,
            }
            for i in range(num_questions)
        ]
    logger.info(
        f"Open-QA evaluation on {num_questions} questions: EM {result['exact_match']:.2f}, F1 {result['f1']:.2f}, "
        f"recall@1 {result['recall_at_1']:.3f}, recall@{k} {result['recall_at_k']:.3f}."
    )
    return result


__all__ = ["DataCollatorForRealmOpenQA", "RealmTrainer", "evaluate_open_qa"]
