"""Open-QA fine-tuning of any REALM checkpoint on your own questions: `realm-hf finetune MODEL --train_file Q.jsonl`.

The model is a `RealmForOpenQA` with its retriever (a directory or Hub repository that holds `index/`: a converted
`google/realm-*` checkpoint, a `realm-hf finetune` output, ...) or a `RealmForPreTraining` one, which becomes the
`RealmForOpenQA` the paper fine-tunes ([`RealmForOpenQA.from_pretraining`]). The questions come from a JSON lines /
JSON / CSV / Parquet file, a `save_to_disk` directory or a Hub dataset id, with `question` and `answers` (or
`answer`), and optionally the `doc_id`s of their gold documents ([`~realm_hf.evaluation.qa_data.load_questions`]).
Training is [`RealmTrainer`] with every `TrainingArguments` option (one or several processes with `accelerate launch`,
resume, bf16, ...); the block embeddings stay fixed while the query embedder and the reader train, as in the paper.
The fine-tuned model, its index and card go to `output_dir` (`from_pretrained` loads them back), with
`finetune_report.json` (exact match and retrieval recall on `--eval_file` before and after).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments

from ..evaluation.open_qa import evaluate_open_qa
from ..evaluation.qa_data import load_questions
from ..file_utils import atomic_write_text
from ..hub.publish import load_realm
from ..logging import get_logger
from ..modeling_realm import RealmForOpenQA, RealmForPreTraining
from .openqa import DataCollatorForRealmOpenQA, RealmTrainer
from .optimization import parameter_groups


logger = get_logger(__name__)

REPORT_FILE = "finetune_report.json"


@dataclass
class QuestionFinetuningArguments:
    """What `realm-hf finetune MODEL --train_file ...` fine-tunes, on what."""

    model_name_or_path: str = field(
        metadata={
            "help": "A RealmForOpenQA with its index/ (local directory or Hub id), or a RealmForPreTraining one."
        }
    )
    train_file: str = field(
        metadata={"help": "Training questions: JSON lines / JSON / CSV / Parquet, a datasets directory or a Hub id."}
    )
    eval_file: str | None = field(default=None, metadata={"help": "Evaluation questions, in the same forms."})
    train_split: str = field(default="train", metadata={"help": "Split of a Hub dataset or DatasetDict directory."})
    eval_split: str = field(default="validation", metadata={"help": "Split of the evaluation Hub dataset."})
    question_column: str = field(default="question", metadata={"help": "The question column."})
    answers_column: str | None = field(
        default=None, metadata={"help": "The answers column (default: 'answers', else 'answer')."}
    )
    gold_doc_ids_column: str | None = field(
        default=None,
        metadata={"help": "A column of corpus doc_ids answering each question: the retriever is trained toward them."},
    )
    embedder_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Peak learning rate of the query embedder (AdamW over realm_hf's parameter groups); "
                  "default: the Trainer's optimizer (--optim) at learning_rate for every weight."},
    )  # fmt: skip
    searcher_beam_size: int | None = field(
        default=None, metadata={"help": "Blocks retrieved per question in training (default: the model's)."}
    )
    reader_beam_size: int | None = field(
        default=None, metadata={"help": "Blocks the reader reads per question (default: the model's)."}
    )
    allow_stale_index: bool = field(
        default=False, metadata={"help": "Accept a RealmForPreTraining index another document tower built."}
    )

    def __post_init__(self):
        for name in ("searcher_beam_size", "reader_beam_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")


def question_finetuning_parser(prog: str | None = None) -> HfArgumentParser:
    """The parser of `realm-hf finetune MODEL --train_file ...`: [`QuestionFinetuningArguments`] and every
    `TrainingArguments` option."""
    return HfArgumentParser((QuestionFinetuningArguments, TrainingArguments), prog=prog)


def load_model_for_finetuning(args: QuestionFinetuningArguments) -> tuple[RealmForOpenQA, object]:
    """The `RealmForOpenQA` (with its retriever) and tokenizer that `args` names; refuses, before any training, a
    checkpoint of another class or one without an index or tokenizer."""
    model, tokenizer, retriever = load_realm(args.model_name_or_path, allow_stale_index=args.allow_stale_index)
    if isinstance(model, RealmForPreTraining):
        model = RealmForOpenQA.from_pretraining(model, retriever, allow_stale_index=args.allow_stale_index)
    elif not isinstance(model, RealmForOpenQA):
        raise ValueError(
            f"{args.model_name_or_path} holds a {type(model).__name__}; fine-tuning for open QA needs a RealmForOpenQA "
            "or RealmForPreTraining checkpoint."
        )
    if model.retriever is None or tokenizer is None:
        raise ValueError(
            f"{args.model_name_or_path} has no knowledge index or no tokenizer (expected index/ and vocab.txt): "
            "build one with `realm-hf index`, or convert a legacy checkpoint with `realm-hf convert`."
        )
    if args.searcher_beam_size is not None:
        model.config.searcher_beam_size = args.searcher_beam_size
    if args.reader_beam_size is not None:
        model.config.reader_beam_size = args.reader_beam_size
    if model.config.reader_beam_size > model.config.searcher_beam_size:
        raise ValueError(
            f"reader_beam_size ({model.config.reader_beam_size}) cannot exceed searcher_beam_size "
            f"({model.config.searcher_beam_size}): the reader reads the top of the retrieved blocks."
        )
    return model, tokenizer


def finetune_on_questions(args: QuestionFinetuningArguments, train_args: TrainingArguments) -> dict:
    r"""
    Fine-tunes, evaluates and saves (see the module docstring); returns the report also written to
    `<output_dir>/finetune_report.json` by the main process.
    """
    started = time.perf_counter()
    train = load_questions(
        args.train_file, args.train_split, args.question_column, args.answers_column, args.gold_doc_ids_column
    )
    evaluation = None
    if args.eval_file is not None:
        evaluation = load_questions(args.eval_file, args.eval_split, args.question_column, args.answers_column)
    model, tokenizer = load_model_for_finetuning(args)
    before = evaluate_open_qa(model, tokenizer, evaluation) if evaluation is not None else None

    # With its own rate for the query embedder, AdamW over realm_hf's groups; else the Trainer's `optim`.
    optimizer = (
        None if args.embedder_learning_rate is None else _optimizer(model, train_args, args.embedder_learning_rate)
    )
    trainer = RealmTrainer(
        model=model,
        args=train_args,
        train_dataset=train,
        data_collator=DataCollatorForRealmOpenQA(tokenizer, gold_documents=args.gold_doc_ids_column is not None),
        processing_class=tokenizer,
        optimizers=(optimizer, None),
    )
    tick = time.perf_counter()
    trainer.train(resume_from_checkpoint=train_args.resume_from_checkpoint)
    train_seconds = time.perf_counter() - tick
    after = evaluate_open_qa(model, tokenizer, evaluation) if evaluation is not None else None
    trainer.save_model()  # weights, config, tokenizer, index/ and the card, in output_dir
    report = {
        "model": args.model_name_or_path,
        "train_file": args.train_file,
        "eval_file": args.eval_file,
        "num_train_questions": len(train),
        "num_eval_questions": len(evaluation) if evaluation is not None else 0,
        "num_blocks": len(model.retriever.index),
        "global_step": trainer.state.global_step,
        "before": before,
        "after": after,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    if trainer.is_world_process_zero():
        atomic_write_text(Path(train_args.output_dir) / REPORT_FILE, json.dumps(report, indent=2))
    return report


def _optimizer(model, train_args: TrainingArguments, embedder_learning_rate: float) -> torch.optim.AdamW:
    """AdamW with realm_hf's parameter groups (no decay on biases and layer norms) and the query embedder's rate."""
    groups = parameter_groups(
        model, train_args.learning_rate, train_args.weight_decay, {"embedder.": embedder_learning_rate}
    )
    return torch.optim.AdamW(
        groups,
        lr=train_args.learning_rate,
        betas=(train_args.adam_beta1, train_args.adam_beta2),
        eps=train_args.adam_epsilon,
    )


__all__ = [
    "QuestionFinetuningArguments",
    "finetune_on_questions",
    "load_model_for_finetuning",
    "question_finetuning_parser",
]
