"""Open-domain QA on the demo's world: the second half of the paper's pipeline (`realm-hf finetune`).

A `realm-hf pretrain` run leaves the settings of the world it was trained on (`demo_args.json`), the model after its
warm starts (`warm-start/`) and the REALM pre-trained model (`final/`), each with its index. This job builds a
[`RealmForOpenQA`] from one of them with [`RealmForOpenQA.from_pretraining`] (query embedder and block embeddings from
the pre-trained retriever, reused as they are; the reader from the knowledge-augmented encoder; a new span scorer),
fine-tunes it with [`RealmTrainer`] on the world's questions ("Where was <name> born?", "In what year was <name>
born?", "Where did <name> work?"), and evaluates it on the questions about the people whose sentences pre-training
held out: those questions are never fine-tuned on, and their facts were never in the pre-training stream, so they can
only be answered by retrieving and reading a document. As in the paper, the block embeddings stay fixed while the
query embedder and the reader train.

`init` chooses the starting point, for the paper's Table 1 in miniature (`benchmarks/table1_openqa.py`):

- `"realm"`: the REALM pre-trained model (`final/`);
- `"warm_start"`: the same model before REALM pre-training (ICT retriever, reading encoder): the ORQA-style baseline;
- `"random"`: random weights of the same architecture, the corpus embedded by its random document tower.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import datasets
import torch
from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..configuration_realm import RealmConfig
from ..evaluation.open_qa import evaluate_open_qa, gold_passage_recall
from ..file_utils import atomic_write_text
from ..hub.model_card import RealmModelCardData
from ..hub.publish import load_realm, publish_realm, save_realm
from ..logging import get_logger
from ..modeling_realm import RealmForOpenQA
from ..retrieval.index import build_index
from ..retrieval.retriever import RealmRetriever
from ..run_layout import FINAL_DIR
from ..training.openqa import DataCollatorForRealmOpenQA, RealmTrainer
from ..training.optimization import parameter_groups
from .job import ARGS_FILE, WARM_START_DIR, DemoArguments, check_hub_target, held_out_split, option
from .synthetic import make_synthetic_knowledge


logger = get_logger(__name__)

INITS = ("realm", "warm_start", "random")
SUPERVISIONS = ("answer", "gold_document")
REPORT_FILE = "openqa_report.json"


# The demo recipe's own settings, as the report and the model card record them.
RECIPE_SETTINGS = (
    "init", "max_steps", "per_device_train_batch_size", "learning_rate", "embedder_learning_rate", "warmup_steps",
    "searcher_beam_size", "reader_beam_size", "reader_seq_len", "retriever_supervision", "seed",
)  # fmt: skip


@dataclass
class FinetuneArguments(TrainingArguments):
    r"""
    Arguments of the demo's `realm-hf finetune` (a `realm-hf pretrain` run fine-tuned on its world's questions): every
    `TrainingArguments` option for its [`RealmTrainer`] (`--gradient_accumulation_steps`, `--bf16`, `--report_to`,
    ...), with the demo recipe's defaults where they differ (each named in the field's help), and the options of the
    starting point and of retrieval. Checkpoints go to `<output_dir>-checkpoints` (removed once the model is saved),
    so that `output_dir` only ever holds a finished model.
    """

    pretrained_dir: str = option(
        "realm-demo", "The output directory of a `realm-hf pretrain` run (its world, warm start and final model)."
    )
    init: Literal["realm", "warm_start", "random"] = option(
        "realm",
        "Starting point: 'realm' (the REALM pre-trained model), 'warm_start' (the same before REALM pre-training: ICT "
        "retriever and reading encoder, the ORQA-style baseline) or 'random' (random weights).",
    )
    output_dir: str | None = option(None, "Where the fine-tuned model goes (demo default: <pretrained_dir>/openqa).")
    max_steps: int = option(300, "Fine-tuning steps (demo default: 300).")
    per_device_train_batch_size: int = option(16, "Questions per step and device (demo default: 16).")
    per_device_eval_batch_size: int = option(64, "Questions per forward pass in evaluation (demo default: 64).")
    learning_rate: float = option(
        1e-3, "Peak learning rate of the reader, linear warm-up and decay (demo default: 1e-3)."
    )
    embedder_learning_rate: float = option(1e-4, "Peak learning rate of the query embedder.")
    warmup_steps: float = option(30, "Linear warm-up: steps, or a fraction of max_steps below 1 (demo default: 30).")
    searcher_beam_size: int = option(16, "Blocks retrieved per question in training (the marginal over them).")
    reader_beam_size: int = option(4, "Blocks the reader reads per question.")
    reader_seq_len: int = option(64, "Reader input length, [CLS] question [SEP] title [SEP] block [SEP], in tokens.")
    retriever_supervision: Literal["answer", "gold_document"] = option(
        "answer",
        "What the retriever is trained toward: 'answer' (every retrieved block containing the answer, the paper's "
        "fine-tuning) or 'gold_document' (the blocks of the documents that state the fact).",
    )
    save_steps: float = option(
        100, "Checkpoint every N steps; a re-run resumes from the last one (demo default: 100; 0: no checkpoints)."
    )
    save_total_limit: int | None = option(1, "Checkpoints kept (demo default: 1).")
    logging_steps: float = option(0.1, "Log every N steps, or a fraction of max_steps below 1 (demo default: 0.1).")
    seed: int = option(0, "Random seed: data order, new weights (demo default: 0).")
    report_to: None | str | list[str] = option("none", "Integrations to report to (demo default: 'none').")
    remove_unused_columns: bool = option(
        False, "Drop dataset columns the model does not take (demo default: False: `answer_ids` is passed through)."
    )
    push_to_hub: bool = option(
        False, "Publish the fine-tuned model, tokenizer, index and card to the Hub (one commit, at the end)."
    )
    hub_model_id: str | None = option(None, "Hub repository of --push_to_hub (default: the output directory's name).")

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}.")
        if self.retriever_supervision not in SUPERVISIONS:
            raise ValueError(
                f"retriever_supervision must be one of {SUPERVISIONS}, got {self.retriever_supervision!r}."
            )
        if self.output_dir is None:
            self.output_dir = str(Path(self.pretrained_dir) / "openqa")
        if min(self.max_steps, self.per_device_train_batch_size, self.searcher_beam_size, self.reader_beam_size) < 1:
            raise ValueError(
                "max_steps, per_device_train_batch_size, searcher_beam_size and reader_beam_size must be >= 1."
            )
        if self.reader_beam_size > self.searcher_beam_size:
            raise ValueError(
                f"reader_beam_size ({self.reader_beam_size}) cannot exceed searcher_beam_size "
                f"({self.searcher_beam_size}): the reader reads the top of the retrieved blocks."
            )
        if self.push_to_hub:
            check_hub_target(self.repo_id)
        if self.save_steps <= 0:
            self.save_strategy, self.save_steps = "no", 500
        super().__post_init__()

    @property
    def repo_id(self) -> str:
        """The Hub repository of `push_to_hub`."""
        return self.hub_model_id or Path(self.output_dir).resolve().name

    def trainer_arguments(self, checkpoints: str | Path) -> TrainingArguments:
        """The `TrainingArguments` the Trainer runs with: these, checkpointing to `checkpoints`, and without the
        Trainer's own Hub pushes (the finished model is published once, with its index)."""
        values = {f.name: getattr(self, f.name) for f in fields(TrainingArguments) if f.init}
        values.update(output_dir=str(checkpoints), push_to_hub=False, hub_model_id=None)
        values["dataloader_pin_memory"] = values["dataloader_pin_memory"] and torch.cuda.is_available()
        return TrainingArguments(**values)

    def recipe(self) -> dict:
        """The demo recipe's settings (for the report and the card)."""
        return {name: getattr(self, name) for name in RECIPE_SETTINGS}


def load_world_questions(pretrained_dir: str | Path) -> tuple[datasets.Dataset, datasets.Dataset, DemoArguments]:
    """The questions of a `realm-hf pretrain` run's world, split as its pre-training was.

    Returns:
        `(train_questions, eval_questions, demo_args)`: the questions about the people whose sentences were in the
        pre-training stream, those about the held-out people, and the run's settings. Each question has `question`,
        `answers`, `gold_doc_ids` (the two documents stating the fact) and `relation`.
    """
    path = Path(pretrained_dir) / ARGS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: give the output directory of a `realm-hf pretrain` run (it writes {ARGS_FILE})."
        )
    demo_args = DemoArguments.from_run(path)
    knowledge = make_synthetic_knowledge(
        num_people=demo_args.num_people, num_cities=demo_args.num_cities, seed=demo_args.seed
    )
    held_out = held_out_split(demo_args.num_people, demo_args.held_out_fraction, demo_args.seed)
    if not held_out:
        raise ValueError(
            f"The run in {pretrained_dir} held no people out of pre-training (held_out_fraction="
            f"{demo_args.held_out_fraction}), so no question could be evaluated without having been trained on."
        )
    questions = knowledge.questions
    is_held_out = [doc_ids[0] in held_out for doc_ids in questions["gold_doc_ids"]]
    train = questions.select([i for i, held in enumerate(is_held_out) if not held])
    evaluation = questions.select([i for i, held in enumerate(is_held_out) if held])
    return train, evaluation, demo_args


def initial_model(pretrained_dir: str | Path, init: str, seed: int = 0):
    """The open-QA model to fine-tune, with its tokenizer, from a `realm-hf pretrain` run (see the module docstring).

    Returns:
        `(model, tokenizer)`: a [`RealmForOpenQA`] with its retriever set, and the run's tokenizer.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}.")
    directory = Path(pretrained_dir) / (WARM_START_DIR if init == "warm_start" else FINAL_DIR)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{directory} has no saved model: `realm-hf pretrain` writes {WARM_START_DIR}/ before REALM pre-training and "
            f"{FINAL_DIR}/ at its end; is the run complete?"
        )
    pretrained, tokenizer, retriever = load_realm(directory)
    if retriever is None:
        raise ValueError(f"{directory} has no index to retrieve from.")
    set_seed(seed)  # the new weights (the span scorer; every weight with "random") start the same way in every run
    if init != "random":
        return RealmForOpenQA.from_pretraining(pretrained, retriever), tokenizer
    config = RealmConfig.from_dict(pretrained.config.to_dict())
    config.architectures = [RealmForOpenQA.__name__]
    model = RealmForOpenQA(config)
    corpus = retriever.index.corpus
    model.set_retriever(RealmRetriever(build_index(corpus, model.embedder, tokenizer, show_progress=False), tokenizer))
    return model, tokenizer


def evaluate_questions(model: RealmForOpenQA, tokenizer, questions: datasets.Dataset, batch_size: int = 64) -> dict:
    """Gold-document recall@1/5 of the retriever and EM / F1 / answer recall of the model on `questions`."""
    metrics = gold_passage_recall(
        model.embedder, model.retriever.index, tokenizer, questions["question"], questions["gold_doc_ids"], ks=(1, 5)
    )
    qa = evaluate_open_qa(model, tokenizer, questions, batch_size=batch_size)
    metrics.update({key: qa[key] for key in ("exact_match", "f1", "recall_at_1", "recall_at_k", "k")})
    return metrics


def run_finetune(args: FinetuneArguments) -> dict:
    """Fine-tunes, evaluates and saves (see the module docstring); returns the report also written to
    `<output_dir>/openqa_report.json`."""
    started = time.perf_counter()
    train, evaluation, demo_args = load_world_questions(args.pretrained_dir)
    model, tokenizer = initial_model(args.pretrained_dir, args.init, seed=args.seed)
    model.config.searcher_beam_size = args.searcher_beam_size
    model.config.reader_beam_size = args.reader_beam_size
    model.config.reader_seq_len = args.reader_seq_len
    before = evaluate_questions(model, tokenizer, evaluation, args.per_device_eval_batch_size)
    logger.info(f"Held-out questions before fine-tuning: {before}")

    output_dir = Path(args.output_dir)
    checkpoints = output_dir.with_name(f"{output_dir.name}-checkpoints")
    train_args = args.trainer_arguments(checkpoints)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.learning_rate, 0.01, {"embedder.": args.embedder_learning_rate}),
        lr=args.learning_rate,
    )
    trainer = RealmTrainer(
        model=model,
        args=train_args,
        train_dataset=train,
        data_collator=DataCollatorForRealmOpenQA(
            tokenizer, gold_documents=args.retriever_supervision == "gold_document"
        ),
        optimizers=(optimizer, None),
    )
    resume = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if resume is not None:
        logger.info(f"Resuming fine-tuning from {resume}.")
    tick = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - tick
    after = evaluate_questions(model, tokenizer, evaluation, args.per_device_eval_batch_size)
    logger.info(f"Held-out questions after fine-tuning: {after}")

    report = {
        "init": args.init,
        "pretrained_dir": Path(args.pretrained_dir).name,
        "num_documents": len(model.retriever.index),
        "num_train_questions": len(train),
        "num_eval_questions": len(evaluation),
        "settings": args.recipe(),
        "before": before,
        "after": after,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - started,
        "example_questions": list(evaluation["question"][:3]),
        "log_history": trainer.state.log_history,
    }
    card = RealmModelCardData(
        model_description=(
            f"REALM open-domain QA (`RealmForOpenQA`) fine-tuned by `realm-hf finetune` from the `{args.init}` start "
            f"of a `realm-hf pretrain` run, on {len(train)} questions about its generated world. On the "
            f"{len(evaluation)} questions about people held out of pre-training and fine-tuning: exact match "
            f"{before['exact_match']:.1f} -> {after['exact_match']:.1f}, gold-document recall@1 "
            f"{before['gold_recall_at_1']:.1%} -> {after['gold_recall_at_1']:.1%}."
        ),
        training_hyperparameters=report["settings"],
    )
    save_realm(output_dir, model, tokenizer, model.retriever, card=card, replace=True)
    atomic_write_text(output_dir / REPORT_FILE, json.dumps(report, indent=2))
    shutil.rmtree(checkpoints, ignore_errors=True)  # the run is complete: its checkpoints are no longer needed
    if args.push_to_hub:
        commit = publish_realm(model, tokenizer, model.retriever, repo_id=args.repo_id, card=card)
        report["hub_commit"] = commit.commit_url
        atomic_write_text(output_dir / REPORT_FILE, json.dumps(report, indent=2))
        logger.info(f"Published to {commit.commit_url}.")
    return report
