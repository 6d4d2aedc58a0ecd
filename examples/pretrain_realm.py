"""REALM pre-training with Accelerate on your own corpus (or the synthetic one).

One GPU / several GPUs / several nodes:

    accelerate launch examples/pretrain_realm.py --corpus_file wiki.jsonl --init_from bert-base-uncased \
        --output_dir realm-out --max_steps 200000 --per_device_train_batch_size 64 --mixed_precision bf16

Two CPU processes (gloo):

    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 examples/pretrain_realm.py --use_cpu --max_steps 100

Resume after an interruption: add `--resume_from_checkpoint latest`. Arguments can also come from one JSON file:
`python examples/pretrain_realm.py config.json`.

The corpus (`--corpus_file`: a JSON lines, JSON, CSV or Parquet file, a datasets directory or a Hub dataset id) has
`title` and `text`; without one the synthetic corpus is used. The
corpus serves both as the knowledge corpus Z and as the source of masked sentences X (the sentence's own document is
never retrieved).
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer, HfArgumentParser

from realm_hf import (
    DataCollatorForInverseClozeTask,
    DataCollatorForRealmPreTraining,
    InverseClozeTaskArguments,
    RealmConfig,
    RealmForPreTraining,
    RealmIndex,
    RealmPreTrainingArguments,
    embed_corpus,
    init_from_bert,
    make_accelerator,
    prepare_ict_examples,
    tag_salient_spans,
    train_inverse_cloze_task,
    train_realm,
)
from realm_hf.demo.job import build_tokenizer
from realm_hf.demo.synthetic import make_synthetic_knowledge
from realm_hf.retrieval.corpus import load_documents, split_documents_into_blocks


@dataclass
class DataArguments:
    corpus_file: str | None = field(
        default=None,
        metadata={
            "help": "The documents, with `title` and `text`: a JSON lines, JSON, CSV or Parquet file, a datasets "
            "directory or a Hub dataset id."
        },
    )
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer (defaults to --init_from's)."})
    max_block_length: int = field(default=288, metadata={"help": "Block length in wordpieces (paper: 288)."})
    query_max_length: int = field(default=64, metadata={"help": "Masked sentence length (paper: 64)."})
    masking: str = field(default="salient_span", metadata={"help": "salient_span, random_token or random_span."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for corpus preprocessing."})


@dataclass
class ModelArguments:
    init_from: str | None = field(default=None, metadata={"help": "A BERT checkpoint; random weights if unset."})
    hidden_size: int = field(default=128, metadata={"help": "Hidden size of a randomly initialised model."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Layers of a randomly initialised model."})
    retriever_proj_size: int = field(default=128, metadata={"help": "Retrieval embedding size."})
    num_candidates: int = field(default=8, metadata={"help": "Retrieved documents per sentence, null included."})
    ict_steps: int = field(default=0, metadata={"help": "Inverse Cloze Task warm-start steps before REALM."})


def main() -> None:
    parser = HfArgumentParser((DataArguments, ModelArguments, RealmPreTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        data_args, model_args, train_args = parser.parse_json_file(sys.argv[1])
    else:
        data_args, model_args, train_args = parser.parse_args_into_dataclasses()
    accelerator = make_accelerator(train_args)

    # Step 1: corpus and tokenizer.
    if data_args.corpus_file:
        documents = load_documents(data_args.corpus_file)
        tokenizer = AutoTokenizer.from_pretrained(data_args.tokenizer or model_args.init_from)
    else:
        knowledge = make_synthetic_knowledge()
        documents = knowledge.documents
        tokenizer = build_tokenizer(knowledge.vocabulary(), Path(train_args.output_dir) / "tokenizer")
    with accelerator.main_process_first():
        corpus = split_documents_into_blocks(
            documents, tokenizer, max_block_length=data_args.max_block_length, num_proc=data_args.num_proc
        )
        sentences = tag_salient_spans(documents, tokenizer, num_proc=data_args.num_proc)
    if data_args.masking == "salient_span":
        sentences = sentences.filter(lambda row: len(row["salient_spans"]) > 0)

    # Step 2: model.
    overrides = {
        "retriever_proj_size": model_args.retriever_proj_size,
        "num_candidates": model_args.num_candidates,
        "block_seq_len": data_args.max_block_length,
    }
    if model_args.init_from:
        model = init_from_bert(RealmForPreTraining, model_args.init_from, **overrides)
    else:
        hidden = model_args.hidden_size
        config = RealmConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=model_args.num_hidden_layers,
                             num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden, **overrides)  # fmt: skip
        model = RealmForPreTraining(config)

    # Step 3: optional ICT warm start of the retriever.
    if model_args.ict_steps:
        examples = prepare_ict_examples(documents, tokenizer, num_proc=data_args.num_proc)
        collator = DataCollatorForInverseClozeTask(
            tokenizer, query_max_length=data_args.query_max_length, block_max_length=data_args.max_block_length
        )
        ict_args = InverseClozeTaskArguments(
            max_steps=model_args.ict_steps, per_device_train_batch_size=train_args.per_device_train_batch_size,
            learning_rate=1e-4, seed=train_args.seed, use_cpu=train_args.use_cpu,
        )  # fmt: skip
        train_inverse_cloze_task(model, examples, collator, ict_args, accelerator=accelerator)

    # Step 4: the initial index, then REALM pre-training with index refresh.
    embeddings = embed_corpus(model.embedder.to(accelerator.device), corpus, tokenizer, accelerator=accelerator)
    index = RealmIndex.build(corpus, embeddings, show_progress=accelerator.is_main_process)
    collator = DataCollatorForRealmPreTraining(
        tokenizer, masking=data_args.masking, max_length=data_args.query_max_length, seed=train_args.seed
    )
    history = train_realm(model, tokenizer, index, sentences, collator, train_args, accelerator=accelerator)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(Path(train_args.output_dir) / "final")
        tokenizer.save_pretrained(Path(train_args.output_dir) / "final")
        print(history[-1])


if __name__ == "__main__":
    main()
