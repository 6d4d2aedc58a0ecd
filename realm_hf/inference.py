"""Answering questions with a [`RealmForOpenQA`]: answers, scores and evidence for a batch of questions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .logging import get_logger


logger = get_logger(__name__)


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
        retrieved_block_ids (`tuple[int, ...]`): Corpus ids of the blocks the reader read, best retrieval score first
            (the top `config.reader_beam_size`; empty when the question could not be answered).
    """

    question: str
    answer: str
    score: float
    block_id: int
    title: str
    evidence: str
    error: str | None = None
    retrieved_block_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


# What a model may raise on one question (out of memory, an input it cannot take: torch and the models raise
# `RuntimeError` and `ValueError`); anything else is a bug and propagates.
_ANSWERING_ERRORS = (RuntimeError, ValueError)


@torch.no_grad()
def answer_questions(
    model,
    tokenizer,
    questions: list[str],
    batch_size: int = 16,
    max_question_length: int = 64,
    show_progress: bool = False,
) -> list[RealmAnswer]:
    r"""
    Answers questions with an open-domain QA model; bad questions get an answer with `error` set instead of stopping
    the batch.

    Empty (or non-string) questions are not run. Questions longer than `max_question_length` tokens are truncated
    (one warning per batch). When a batch fails (for example because its reader inputs are shorter than
    `config.max_span_width`), its questions are retried one at a time, and a question that still fails gets an
    answer whose `error` says why; the answers of the other questions are kept.

    Args:
        model ([`RealmForOpenQA`]): The model, with its retriever set.
        tokenizer: The question tokenizer.
        questions (`list[str]`): The questions.
        batch_size (`int`): Questions per forward pass.
        max_question_length (`int`): Longer questions are truncated (with a warning); at most
            `model.config.max_position_embeddings`.
        show_progress (`bool`, *optional*, defaults to `False`): A progress bar over the batches.

    Returns:
        `list[RealmAnswer]`, one per question, in order.

    Raises:
        `ValueError`: If the model has no retriever, or `batch_size` / `max_question_length` is out of range.
    """
    if model.retriever is None:
        raise ValueError("answer_questions needs a model with a retriever (`model.set_retriever(...)`).")
    if batch_size < 1:
        raise ValueError(f"answer_questions: batch_size must be at least 1, got {batch_size}.")
    max_positions = model.config.max_position_embeddings
    if not 3 <= max_question_length <= max_positions:
        raise ValueError(
            f"answer_questions: max_question_length must be between 3 and the model's max_position_embeddings "
            f"({max_positions}), got {max_question_length}."
        )
    was_training = model.training
    model.eval()
    answers: list[RealmAnswer | None] = [None] * len(questions)
    valid = []
    for i, question in enumerate(questions):
        if not isinstance(question, str) or not question.strip():
            answers[i] = _failed(question, "empty question")
        else:
            valid.append(i)
    starts = range(0, len(valid), batch_size)
    try:
        for start in tqdm(starts, desc="Answering", unit="batch", disable=not show_progress or len(starts) < 2):
            rows = valid[start : start + batch_size]
            _warn_long_questions(tokenizer, questions, rows, max_question_length)
            try:
                batch_answers = _answer_batch(model, tokenizer, [questions[i] for i in rows], max_question_length)
            except _ANSWERING_ERRORS as err:  # one bad question must not lose the answers of the others
                if len(rows) == 1:
                    batch_answers = [_failed(questions[rows[0]], _describe(err))]
                    logger.warning(f"Question {rows[0]} could not be answered: {_describe(err)}")
                else:
                    logger.warning(f"A batch of {len(rows)} questions failed ({_describe(err)}); retrying one by one.")
                    batch_answers = [_answer_one(model, tokenizer, questions[i], i, max_question_length) for i in rows]
            for i, answer in zip(rows, batch_answers):
                answers[i] = answer
    finally:
        model.train(was_training)
    return answers


def _failed(question, error: str) -> RealmAnswer:
    """The answer given to a question that could not be answered."""
    return RealmAnswer(str(question), "", float("-inf"), -1, "", "", error=error)


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def _warn_long_questions(tokenizer, questions: list[str], rows: list[int], max_question_length: int) -> None:
    lengths = tokenizer([questions[i] for i in rows])["input_ids"]
    long = [(i, len(ids)) for i, ids in zip(rows, lengths) if len(ids) > max_question_length]
    if long:
        shown = ", ".join(f"{i} ({n} tokens)" for i, n in long[:10]) + (", ..." if len(long) > 10 else "")
        logger.warning(f"Questions longer than {max_question_length} tokens were truncated: {shown}.")


def _answer_one(model, tokenizer, question: str, index: int, max_question_length: int) -> RealmAnswer:
    try:
        return _answer_batch(model, tokenizer, [question], max_question_length)[0]
    except _ANSWERING_ERRORS as err:  # reported in the answer's `error`
        logger.warning(f"Question {index} could not be answered: {_describe(err)}")
        return _failed(question, _describe(err))


def _answer_batch(model, tokenizer, texts: list[str], max_question_length: int) -> list[RealmAnswer]:
    """One forward pass of `model` over non-empty questions: answers, scores and evidence blocks."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_question_length, return_tensors="pt")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    results = split_open_qa_output(model(**batch, return_dict=True), len(texts))
    evidence = block_texts(model.retriever.index.corpus, results["block_id"].tolist())
    return [
        RealmAnswer(
            question=question,
            answer=tokenizer.decode(answer_ids, skip_special_tokens=True),
            score=float(score),
            block_id=int(block_id),
            title=title,
            evidence=text,
            retrieved_block_ids=tuple(read),
        )
        for question, answer_ids, score, block_id, (title, text), read in zip(
            texts,
            results["answer_ids"],
            results["score"],
            results["block_id"],
            evidence,
            results["read_block_ids"].tolist(),
        )
    ]


def split_open_qa_output(output, batch_size: int) -> dict[str, Any]:
    """Per-question results of a [`RealmForOpenQA`] forward pass, batch dimension first.

    The model returns the original implementation's one-question shapes when `batch_size == 1` (what the old API
    promised); this is the one place that undoes it.

    Args:
        output ([`RealmForOpenQAOutput`]): The model's output.
        batch_size (`int`): The number of questions.

    Returns:
        `dict` with `answer_ids` (a list of 1-D token id tensors), `score` (`(batch_size,)` float: the best span's
        score), `block_id` (`(batch_size,)` long: the evidence block of the answer) and `read_block_ids`
        (`(batch_size, reader_beam_size)` long: the blocks the reader read), all on the CPU.
    """
    predicted = output.predicted_answer_ids
    predicted = [predicted] if batch_size == 1 else list(predicted)
    reader = output.reader_output
    retrieved = output.retrieved_block_ids
    block_index = reader.block_idx.reshape(batch_size, 1).to(retrieved.device)
    return {
        "answer_ids": [ids.reshape(-1).cpu() for ids in predicted],
        "score": reader.logits.reshape(batch_size, -1).max(dim=-1).values.float().cpu(),
        "block_id": retrieved.gather(1, block_index).reshape(-1).cpu(),
        "read_block_ids": retrieved[:, : reader.logits.shape[-2]].cpu(),  # logits: (..., blocks read, spans)
    }


def block_texts(corpus, block_ids: list[int]) -> list[tuple[str, str]]:
    """`(title, text)` of corpus blocks, read in one batch (empty strings where the corpus has no such column)."""
    columns = [name for name in ("title", "text") if name in corpus.column_names]
    rows = corpus.select_columns(columns)[list(block_ids)] if columns else {}
    empty = [""] * len(block_ids)
    titles, texts = rows.get("title", empty), rows.get("text", empty)
    return [(title or "", text or "") for title, text in zip(titles, texts)]
