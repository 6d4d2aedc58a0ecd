"""Evaluating [`RealmForOpenQA`] on open-domain questions: answer exact match and F1, and retrieval recall.

[`evaluate_open_qa`] answers every question with [`~realm_hf.inference.answer_questions`] and scores the answers and
the retrieved blocks in one pass; [`gold_passage_recall`] measures retrieval alone against gold passages (SQuAD-open).
Answers are matched as the `evaluate` metric of [`realm_hf.evaluation.metrics`] matches them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from ..inference import answer_questions, block_texts
from ..logging import get_logger
from ..retrieval.index import build_index
from .metrics import warn_invalid_patterns
from .metrics.open_qa.open_qa import ANSWER_TYPES, compile_answer_regex, normalize_answer, question_scores


logger = get_logger(__name__)


def _answer_in_text(normalised_answers: list[str], normalised_text: str) -> bool:
    """Whether a normalised answer occurs in a normalised text as a sequence of whole words."""
    padded = f" {normalised_text} "
    return any(answer and f" {answer} " in padded for answer in normalised_answers)


def _as_columns(dataset: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """The `question`, `answers` and (if present) `answer_type` columns of a `datasets.Dataset`, a dict of lists or a
    list of examples; missing answer types are `None`."""
    if isinstance(dataset, Mapping) or hasattr(dataset, "column_names"):
        columns = dataset.column_names if hasattr(dataset, "column_names") else list(dataset)
        questions, answers = list(dataset["question"]), list(dataset["answers"])
        types = list(dataset["answer_type"]) if "answer_type" in columns else [None] * len(questions)
        return questions, answers, types
    examples = list(dataset)
    return (
        [e.get("question") for e in examples],
        [e.get("answers") for e in examples],
        [e.get("answer_type") for e in examples],
    )


def _answer_types(column: list[Any], answer_type: str | None) -> list[str]:
    """One answer type per question: `answer_type` when given, else the dataset's column, else `"text"`."""
    types = [answer_type or kind or "text" for kind in column]
    unknown = sorted({kind for kind in types if kind not in ANSWER_TYPES})
    if unknown:
        raise ValueError(f"evaluate_open_qa: unknown answer type(s) {unknown}; expected one of {ANSWER_TYPES}.")
    return types


class _AnswerMatcher:
    """Scores predictions and blocks against the gold answers of one question, text or regular expressions.

    Text answers are compared after [`normalize_answer`] (exact match, token F1; in a block, as whole words).
    Regex answers (CuratedTREC) match a prediction with `re.match` and a block with `re.search` on the raw text, with
    `IGNORECASE | UNICODE | MULTILINE`, as ORQA/DrQA do; a pattern that does not compile never matches and is
    recorded in `invalid`.
    """

    def __init__(self, answers: list[str], answer_type: str, cache: dict[str, Any]):
        self.answer_type = answer_type
        self.invalid: list[str] = []
        if answer_type == "text":
            self.answers = answers
            self.normalised = [normalize_answer(a) for a in answers]
            self.patterns = []
        else:
            self.answers, self.normalised, self.patterns = answers, [], []
            for pattern in answers:
                if pattern not in cache:
                    cache[pattern] = compile_answer_regex(pattern)
                if cache[pattern] is None:
                    self.invalid.append(pattern)
                else:
                    self.patterns.append(cache[pattern])

    @property
    def has_answers(self) -> bool:
        return any(self.normalised) if self.answer_type == "text" else bool(self.patterns)

    def scores(self, prediction: str) -> tuple[float, float]:
        """Exact match and F1 as the metric computes them ([`question_scores`]); 0 without usable answers."""
        if not self.has_answers:
            return 0.0, 0.0
        return question_scores(prediction, self.answers, self.answer_type)

    def in_block(self, raw_text: str, normalised_text: str) -> bool:
        if self.answer_type == "text":
            return _answer_in_text(self.normalised, normalised_text)
        return any(pattern.search(raw_text) is not None for pattern in self.patterns)


@torch.no_grad()
def _retrieve(
    query_embedder, index, tokenizer, questions: list[str], k: int, batch_size: int, max_length: int
) -> np.ndarray:
    """Top-`k` block ids of `index`, shape `(len(questions), k)`, of non-empty questions (embedder as it is)."""
    device = next(query_embedder.parameters()).device
    rows = []
    for start in range(0, len(questions), batch_size):
        texts = questions[start : start + batch_size]
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batch = {key: value.to(device) for key, value in batch.items()}
        query = query_embedder(**batch, return_dict=True).projected_score
        _, ids = index.search(query.float().cpu().numpy(), k)
        rows.append(ids)
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, k), dtype=np.int64)


@torch.no_grad()
def gold_passage_recall(
    query_embedder,
    index,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    gold_doc_ids: Sequence[int | Sequence[int]],
    ks: Sequence[int] = (1, 5, 20),
    batch_size: int = 64,
    max_question_length: int = 64,
) -> dict[str, float]:
    r"""
    Retrieval recall against gold documents: the fraction of questions with a block of a gold document among the
    top-k retrieved blocks, for each k (SQuAD-open's "gold passage recall").

    Args:
        query_embedder ([`RealmEmbedder`]): Embeds the questions (run in eval mode; its mode is restored).
        index ([`RealmIndex`]): The blocks; its corpus `doc_id` column says which document each block comes from.
        tokenizer ([`PreTrainedTokenizerBase`]): The question tokenizer.
        questions (`Sequence[str]`): The questions.
        gold_doc_ids (`Sequence[int]` or `Sequence[Sequence[int]]`): For each question, the `doc_id` of its gold
            document, or of each of its gold documents (any of them counts).
        ks (`Sequence[int]`, *optional*, defaults to `(1, 5, 20)`): Retrieval depths (capped at the index size).
        batch_size (`int`, *optional*, defaults to 64): Questions per forward pass.
        max_question_length (`int`, *optional*, defaults to 64): Questions are truncated to this many tokens.

    Returns:
        `dict[str, float]`: `gold_recall_at_{k}` for each k, fractions in [0, 1].
    """
    if len(questions) != len(gold_doc_ids):
        raise ValueError(f"gold_passage_recall: {len(questions)} questions but {len(gold_doc_ids)} gold doc ids.")
    block_doc = np.asarray(index.corpus["doc_id"], dtype=np.int64)
    gold_sets = [{int(gold)} if np.isscalar(gold) else {int(doc) for doc in gold} for gold in gold_doc_ids]
    if any(not gold for gold in gold_sets):
        raise ValueError("gold_passage_recall: every question needs at least one gold doc id.")
    k_max = min(max(ks), len(index))
    was_training = query_embedder.training
    query_embedder.eval()
    try:
        retrieved = _retrieve(
            query_embedder, index, tokenizer, list(questions), k_max, batch_size, max_question_length
        )
    finally:
        query_embedder.train(was_training)
    hits = np.array([[doc in gold for doc in row] for row, gold in zip(block_doc[retrieved].tolist(), gold_sets)])
    return {f"gold_recall_at_{k}": float(hits[:, :k].any(axis=1).mean()) if len(gold_sets) else 0.0 for k in ks}


def zero_shot_recall(
    model,
    corpus,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    gold_doc_ids: Sequence[int | Sequence[int]],
    ks: Sequence[int] = (1, 5, 20),
    embed_batch_size: int = 128,
    max_question_length: int = 64,
) -> dict[str, float]:
    r"""
    Zero-shot gold-passage recall of a pre-trained retriever (REALM's Table 2 setting): the corpus is embedded by the
    model's document tower, and the questions are searched by its query tower ([`gold_passage_recall`]).

    Args:
        model ([`RealmForPreTraining`] or any model with `embedder` and `query_embedder`, e.g. [`RealmForOpenQA`]):
            Its towers as they are now (an index built by older weights is not used).
        corpus (`datasets.Dataset`): The blocks (`input_ids` or `text`, and `doc_id`), as [`build_index`] takes them.
        tokenizer, questions, gold_doc_ids, ks, max_question_length: As in [`gold_passage_recall`].
        embed_batch_size (`int`, *optional*, defaults to 128): Blocks per forward pass.

    Returns:
        `dict[str, float]`: `gold_recall_at_{k}` for each k.
    """
    index = build_index(corpus, model.embedder, tokenizer, batch_size=embed_batch_size, show_progress=False)
    return gold_passage_recall(
        model.query_embedder, index, tokenizer, questions, gold_doc_ids, ks=ks, max_question_length=max_question_length
    )


def evaluate_open_qa(
    model,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    batch_size: int = 16,
    k: int | None = None,
    max_question_length: int = 64,
    return_predictions: bool = False,
    answer_type: str | None = None,
) -> dict[str, Any]:
    r"""
    Evaluates a [`RealmForOpenQA`] on questions with gold answers: retrieval recall and answer exact match / F1.

    Retrieval recall@n is the fraction of questions for which at least one of the top-n retrieved blocks contains a
    gold answer (block `text` of `model.retriever.index.corpus`). Text answers are matched after
    [`~realm_hf.evaluation.metrics.open_qa.normalize_answer`] (in blocks as whole words); answer regular expressions
    (CuratedTREC, `answer_type="regex"`) with `re.match` on the prediction and `re.search` on the block text, as in
    ORQA. Predictions come from [`~realm_hf.inference.answer_questions`].

    Bad input does not stop the evaluation: empty questions, questions without answers, answers absent from every
    block and questions the model fails on count as wrong (the failures are logged and, with `return_predictions`,
    listed in `error`); longer questions are truncated to `max_question_length` tokens with a warning; a regular
    expression that does not compile never matches and is reported (`num_invalid_regex` and a warning).

    Args:
        model ([`RealmForOpenQA`]): The model, with its retriever set. Its train/eval mode is restored afterwards.
        tokenizer ([`PreTrainedTokenizerBase`]): The question tokenizer.
        dataset: A `datasets.Dataset`, a dict of lists or a list of examples with `question` (`str`), `answers`
            (`list[str]`) and optionally `answer_type` (`"text"` or `"regex"`, as the loaders of
            [`realm_hf.evaluation.qa_data`] write it).
        batch_size (`int`, *optional*, defaults to 16): Questions per forward pass.
        k (`int`, *optional*): Retrieval depth for `recall_at_k`; defaults to `model.config.reader_beam_size` (the
            blocks the reader sees at evaluation), capped at the corpus size.
        max_question_length (`int`, *optional*, defaults to 64): Questions are truncated to this many tokens.
        return_predictions (`bool`, *optional*, defaults to `False`): Also return the per-question predictions.
        answer_type (`str`, *optional*): `"text"` or `"regex"` for every question, overriding the dataset's
            `answer_type` column (questions without one are `"text"`).

    Returns:
        `dict` with `exact_match` and `f1` (percentages in [0, 100]; for regex answers F1 counts a match as 1),
        `recall_at_1` and `recall_at_k` (fractions in [0, 1]), `k`, and the counts `num_questions`,
        `num_empty_questions`, `num_without_answers`, `num_failed`, `num_regex_questions`, `num_invalid_regex`,
        `num_exact_match`, `num_retrieved_at_1`, `num_retrieved_at_k`; with `return_predictions`, also `predictions`
        (one dict per question: `question`, `prediction`, `answers`, `answer_type`, `exact_match`,
        `retrieved_at_1`, `retrieved_at_k`, `block_id`, `error`).
    """
    if model.retriever is None:
        raise ValueError("evaluate_open_qa needs a model with a retriever (`model.set_retriever(...)`).")
    questions, references, type_column = _as_columns(dataset)
    types = _answer_types(type_column, answer_type)
    references = [[a] if isinstance(a, str) else [x for x in (a or []) if isinstance(x, str)] for a in references]
    num_questions = len(questions)
    corpus = model.retriever.index.corpus
    num_blocks = len(model.retriever.index)
    k = min(int(k or model.config.reader_beam_size), num_blocks)
    if k < 1:
        raise ValueError(f"evaluate_open_qa: k must be at least 1, got {k}.")
    pattern_cache: dict[str, Any] = {}
    matchers = [_AnswerMatcher(refs, kind, pattern_cache) for refs, kind in zip(references, types)]
    warn_invalid_patterns(
        [(f"question {i}", pattern) for i, matcher in enumerate(matchers) for pattern in matcher.invalid],
        "the evaluation set",
    )

    valid = [i for i, q in enumerate(questions) if isinstance(q, str) and q.strip()]
    was_training = model.training
    model.eval()
    try:
        answers = answer_questions(
            model, tokenizer, list(questions), batch_size=batch_size, max_question_length=max_question_length
        )
        answered = [i for i in valid if answers[i].error is None]
        if all(len(answers[i].retrieved_block_ids) >= k for i in answered):
            # The blocks the model retrieved to answer: recall needs no second search.
            retrieved = [answers[i].retrieved_block_ids[:k] for i in answered]
        else:  # k beyond the reader's beam
            retrieved = _retrieve(
                model.embedder,
                model.retriever.index,
                tokenizer,
                [questions[i] for i in answered],
                k,
                batch_size,
                max_length=max_question_length,
            )
    finally:
        model.train(was_training)

    # Every retrieved block's text, read in one batch and normalised once.
    block_ids = sorted({int(b) for row in retrieved for b in row if int(b) >= 0})
    texts = {b: (text, normalize_answer(text)) for b, (_, text) in zip(block_ids, block_texts(corpus, block_ids))}

    at_1 = [False] * num_questions
    at_k = [False] * num_questions
    for row, i in enumerate(answered):
        if not matchers[i].has_answers:
            continue
        hits = [int(b) >= 0 and matchers[i].in_block(*texts[int(b)]) for b in retrieved[row]]
        at_1[i] = bool(hits[:1]) and hits[0]
        at_k[i] = any(hits)

    predictions = [a.answer if a.error is None else "" for a in answers]
    scores = [matcher.scores(p) for p, matcher in zip(predictions, matchers)]
    correct = [exact == 1.0 for exact, _ in scores]
    f1 = [score for _, score in scores]
    denominator = max(num_questions, 1)
    result: dict[str, Any] = {
        "exact_match": 100.0 * sum(correct) / denominator,
        "f1": 100.0 * sum(f1) / denominator,
        "recall_at_1": sum(at_1) / denominator,
        "recall_at_k": sum(at_k) / denominator,
        "k": k,
        "num_questions": num_questions,
        "num_empty_questions": num_questions - len(valid),
        "num_without_answers": sum(1 for matcher in matchers if not matcher.has_answers),
        "num_failed": len(valid) - len(answered),
        "num_regex_questions": sum(1 for kind in types if kind == "regex"),
        "num_invalid_regex": sum(len(matcher.invalid) for matcher in matchers),
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
                "answer_type": types[i],
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
