"""Answering questions with a [`RealmForOpenQA`]: answers, scores and evidence for a batch of questions."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers.utils import logging


logger = logging.get_logger(__name__)


@dataclass
class RealmAnswer:
    """One answer.

    Attributes:
        question (`str`): The question as given.
        answer (`str`): The predicted answer span ("" when the question could not be answered).
        score (`float`): Span score (reader logit plus the block's retrieval logit).
        block_id (`int`): Corpus id of the evidence block (-1 when there is none).
        title (`str`): Title of the evidence block.
        evidence (`str`): Text of the evidence block.
        error (`str`, *optional*): Why there is no answer (for example an empty question).
    """

    question: str
    answer: str
    score: float
    block_id: int
    title: str
    evidence: str
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def answer_questions(
    model, tokenizer, questions: list[str], batch_size: int = 16, max_question_length: int = 64
) -> list[RealmAnswer]:
    r"""
    Answers questions with an open-domain QA model; bad questions get an answer with `error` set instead of stopping
    the batch.

    Args:
        model ([`RealmForOpenQA`]): The model, with its retriever set.
        tokenizer: The question tokenizer.
        questions (`list[str]`): The questions.
        batch_size (`int`): Questions per forward pass.
        max_question_length (`int`): Longer questions are truncated (with a warning).

    Returns:
        `list[RealmAnswer]`, one per question, in order.
    """
    if model.retriever is None:
        raise ValueError("answer_questions needs a model with a retriever (`model.set_retriever(...)`).")
    was_training = model.training
    model.eval()
    answers: list[RealmAnswer | None] = [None] * len(questions)
    valid = []
    for i, question in enumerate(questions):
        if not isinstance(question, str) or not question.strip():
            answers[i] = RealmAnswer(str(question), "", float("-inf"), -1, "", "", error="empty question")
        else:
            valid.append(i)
    corpus = model.retriever.index.corpus
    try:
        for start in range(0, len(valid), batch_size):
            rows = valid[start : start + batch_size]
            batch = tokenizer([questions[i] for i in rows], padding=True, truncation=True,
                              max_length=max_question_length, return_tensors="pt")  # fmt: skip
            lengths = [len(tokenizer(questions[i]).input_ids) for i in rows]
            for i, length in zip(rows, lengths):
                if length > max_question_length:
                    logger.warning(f"Question {i} has {length} tokens; truncated to {max_question_length}.")
            batch = {k: v.to(model.device) for k, v in batch.items()}
            output = model(**batch, return_dict=True)
            predicted = output.predicted_answer_ids if len(rows) > 1 else [output.predicted_answer_ids]
            reader = output.reader_output
            logits = reader.logits if len(rows) > 1 else reader.logits.unsqueeze(0)
            block_index = reader.block_idx.view(-1)
            for j, i in enumerate(rows):
                block_id = int(output.retrieved_block_ids[j, block_index[j]])
                block = corpus[block_id]
                answers[i] = RealmAnswer(
                    question=questions[i],
                    answer=tokenizer.decode(predicted[j], skip_special_tokens=True),
                    score=float(logits[j].max()),
                    block_id=block_id,
                    title=block.get("title", "") or "",
                    evidence=block.get("text", "") or "",
                )
    finally:
        model.train(was_training)
    return answers
