"""Fine-tune a saved `RealmForOpenQA` for open-domain QA with a plain Accelerate loop (no `Trainer`).

The starting point is a directory written by `realm_hf.save_realm` (model, tokenizer and knowledge index in `index/`),
for example the `final/` folder of `examples/finetune_openqa.py` or a `realm-hf convert` of a `google/realm-orqa-*`
checkpoint. As in the REALM paper, the block embeddings stay fixed in the index; the query embedder and the reader
train on the marginal retrieval + reader loss (`outputs.reader_output.loss`). Batches come from the package's
`DataCollatorForRealmOpenQA`.

One process:

    python examples/finetune_openqa_accelerate.py --model realm-squad --train_file train.jsonl --dataset squad \
        --eval_file dev.jsonl --output_dir openqa-accel --max_steps 1000 --per_device_batch_size 8

Several processes (each reads its share of every global batch; gradients are averaged):

    accelerate launch --num_processes 4 examples/finetune_openqa_accelerate.py ...          # GPUs
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 examples/finetune_openqa_accelerate.py --cpu ...   # CPU

Every process loads the index (memory-mapped, so the pages are shared). The main process evaluates at the end, saves
the model with its index to `<output_dir>/final` and writes `<output_dir>/finetune_report.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup
from transformers.utils import logging

from realm_hf import RealmRetriever, ShardedRealmIndex, load_realm, save_realm
from realm_hf.evaluation.open_qa import evaluate_open_qa
from realm_hf.evaluation.qa_data import load_nq_open, load_qa_file, load_webquestions
from realm_hf.training.openqa import DataCollatorForRealmOpenQA
from realm_hf.training.optimization import parameter_groups


logger = logging.get_logger("finetune_openqa_accelerate")

LOADERS = {
    "nq": load_nq_open,
    "webquestions": load_webquestions,
    "squad": lambda path: load_qa_file(path, answer_type="text", file_format="jsonl"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A RealmForOpenQA saved with its tokenizer and index.")
    parser.add_argument("--train_file", required=True, help="Training questions with text answers.")
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="nq", help="Format of the question files.")
    parser.add_argument("--eval_file", default=None, help="Questions evaluated at the end (same format).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_steps", type=int, default=1000, help="Optimizer steps.")
    parser.add_argument("--per_device_batch_size", type=int, default=8, help="Questions per process and step.")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--warmup_steps", type=int, default=0)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--searcher_beam_size", type=int, default=None, help="Blocks retrieved in training.")
    parser.add_argument("--max_question_length", type=int, default=64)
    parser.add_argument("--eval_batch_size", type=int, default=16)
    parser.add_argument("--logging_steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cpu", action="store_true", help="Train on CPU processes even when GPUs are present.")
    parser.add_argument("--no_save", action="store_true", help="Do not save the fine-tuned model.")
    parser.add_argument(
        "--sharded_index",
        action="store_true",
        help="Each process keeps 1/N of the block embeddings and searches collectively (ShardedRealmIndex).",
    )
    return parser.parse_args(argv)


def load_examples(dataset: str, path: str) -> list[dict]:
    """`{"question", "answers"}` examples of a question file with text answers."""
    questions = LOADERS[dataset](path)
    return [{"question": q, "answers": list(a)} for q, a in zip(questions["question"], questions["answers"])]


def train(args: argparse.Namespace, accelerator: Accelerator) -> dict:
    """The training loop; returns the per-step losses (averaged over processes) and the step count."""
    model, tokenizer, retriever = load_realm(args.model)
    if retriever is None or not hasattr(model, "set_retriever"):
        raise SystemExit(f"{args.model} must hold a RealmForOpenQA with its tokenizer and index (see save_realm).")
    if args.searcher_beam_size is not None:
        model.config.searcher_beam_size = args.searcher_beam_size
    if args.sharded_index:  # training searches collectively; evaluation and saving below use the whole index
        model.set_retriever(RealmRetriever(ShardedRealmIndex.from_index(retriever.index), tokenizer))
    examples = load_examples(args.dataset, args.train_file)
    collator = DataCollatorForRealmOpenQA(tokenizer, max_question_length=args.max_question_length)
    loader = DataLoader(examples, batch_size=args.per_device_batch_size, shuffle=True, collate_fn=collator)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.learning_rate, args.weight_decay), lr=args.learning_rate
    )
    # The schedule counts optimizer steps; it is stepped here, not by Accelerate (whose prepared scheduler steps once
    # per process, which would make it decay num_processes times too fast).
    scheduler = get_linear_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    logger.info(
        f"{len(examples)} training questions, {accelerator.num_processes} process(es), "
        f"{args.per_device_batch_size * accelerator.num_processes * args.gradient_accumulation_steps} questions per "
        f"optimizer step, searcher beam {accelerator.unwrap_model(model).config.searcher_beam_size}."
    )
    model.train()
    losses: list[float] = []
    window: list[torch.Tensor] = []
    step, epoch = 0, 0
    while step < args.max_steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch in loader:
            with accelerator.accumulate(model):
                outputs = model(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"],
                    answer_ids=batch["answer_ids"],
                    return_dict=True,
                )
                loss = outputs.reader_output.loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            step += 1
            step_loss = accelerator.gather(torch.stack(window).mean().reshape(1)).mean().item()
            losses.append(step_loss)
            window = []
            if step % args.logging_steps == 0 or step == args.max_steps:
                logger.info(f"step {step}/{args.max_steps}: loss {step_loss:.4f}, lr {scheduler.get_last_lr()[0]:.2e}")
            if step >= args.max_steps:
                break
        epoch += 1
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(model)
    model.set_retriever(retriever)  # the whole index again (block embeddings do not change in fine-tuning)
    return {"model": model, "tokenizer": tokenizer, "retriever": retriever, "losses": losses}


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    accelerator = Accelerator(
        cpu=args.cpu,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # The embedder's and the reader's MLM heads take no part in open-QA fine-tuning.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    logging.set_verbosity_info() if accelerator.is_main_process else logging.set_verbosity_error()
    set_seed(args.seed)
    start = time.perf_counter()
    trained = train(args, accelerator)
    train_seconds = time.perf_counter() - start
    if not accelerator.is_main_process:
        return None
    model, tokenizer, retriever = trained["model"], trained["tokenizer"], trained["retriever"]
    report = {
        "model": str(args.model),
        "train_file": Path(args.train_file).name,
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "global_step": len(trained["losses"]),
        "losses": trained["losses"],
        "final_loss": trained["losses"][-1] if trained["losses"] else math.nan,
        "train_seconds": train_seconds,
    }
    if args.eval_file:
        evaluation = load_examples(args.dataset, args.eval_file)
        report["eval"] = evaluate_open_qa(
            model,
            tokenizer,
            evaluation,
            batch_size=args.eval_batch_size,
            max_question_length=args.max_question_length,
        )
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_save:
        save_realm(output_dir / "final", model, tokenizer, retriever)
        report["saved_to"] = str(output_dir / "final")
    (output_dir / "finetune_report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info(f"Wrote {output_dir / 'finetune_report.json'}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
