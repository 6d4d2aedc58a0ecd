"""REALM pre-training with Accelerate on your own corpus (or the synthetic one).

One GPU / several GPUs / several nodes:

    accelerate launch examples/pretrain_realm.py --corpus wiki.jsonl --init_from bert-base-uncased \
        --output_dir realm-out --max_steps 200000 --per_device_train_batch_size 64 --bf16 True

Two CPU processes (gloo):

    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 examples/pretrain_realm.py --use_cpu --max_steps 100

Resume after an interruption: add `--resume_from_checkpoint latest`. Arguments can also come from one JSON file:
`python examples/pretrain_realm.py config.json`.

The corpus (`--corpus`: a JSON lines, JSON, CSV or Parquet file, a datasets directory or a Hub dataset id) has a
text column and optionally a title column; without one the synthetic world's documents are used. It serves both as the
knowledge corpus Z and as the source of masked sentences X (a sentence's own document is never retrieved). The
pipeline is `realm_hf.training.corpus_pretraining.pretrain_on_corpus`, the one behind `realm-hf pretrain --corpus`;
both parse `RealmPreTrainingArguments`, a `TrainingArguments` (checkpoints, resume, gradient accumulation, bf16 / fp16,
`optim`, `report_to`, refresh mode).
"""

import sys
from pathlib import Path

from realm_hf import make_accelerator
from realm_hf.demo.job import build_tokenizer
from realm_hf.demo.synthetic import make_synthetic_knowledge
from realm_hf.training.corpus_pretraining import corpus_pretraining_parser, pretrain_on_corpus


def main() -> None:
    parser = corpus_pretraining_parser()  # the parser of `realm-hf pretrain --corpus`
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        corpus_args, model_args, train_args = parser.parse_json_file(sys.argv[1])
    else:
        corpus_args, model_args, train_args = parser.parse_args_into_dataclasses()
    accelerator = make_accelerator(train_args)
    if corpus_args.corpus is None:  # the synthetic world's documents, with a vocabulary of its words
        output_dir = Path(train_args.output_dir)
        knowledge = make_synthetic_knowledge()
        with accelerator.main_process_first():
            if accelerator.is_main_process:
                build_tokenizer(knowledge.vocabulary(), output_dir / "tokenizer")
                knowledge.documents.save_to_disk(output_dir / "synthetic-corpus")
        corpus_args.corpus = str(output_dir / "synthetic-corpus")
        corpus_args.tokenizer_name = corpus_args.tokenizer_name or str(output_dir / "tokenizer")
    model, _, history = pretrain_on_corpus(corpus_args, model_args, train_args, accelerator=accelerator)
    if accelerator.is_main_process:
        print(history[-1] if history else "no step was run")


if __name__ == "__main__":
    main()
