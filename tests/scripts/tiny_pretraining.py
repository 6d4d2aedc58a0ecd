"""Tiny REALM pre-training run used by the resume and distributed tests (run as a script, alone or with torchrun).

Usage: python tiny_pretraining.py OUTPUT_DIR [--max-steps N] [--save-steps N] [--resume] [--hang-at-step N]
           [--batch-size N] [--refresh-steps N] [--sharded-index]

Writes OUTPUT_DIR/result.json (world size, history) and OUTPUT_DIR/final.safetensors (parameters) on the main process.
`--hang-at-step N` makes the run stop making progress at step N (it sleeps), so that a test can kill it there.

Fault injection (test-only, no hook in the package): `REALM_TEST_KILL_AT="STAGE:STEP[,STAGE:STEP...]"` makes the
process SIGKILL itself at a named stage of optimizer step STEP, by wrapping functions in this process:

- `step:N`: right after optimizer step N, before its index refresh and checkpoint;
- `refresh:N`: during the index refresh of step N (the corpus is re-embedded, the new index not yet swapped in);
- `index-save:N`: while writing the index of step N (its corpus written, the rest not; `index-save:0` is the
  initial index);
- `checkpoint:N`: while writing checkpoint N (`optimizer.safetensors` half written);
- `checkpoint-end:N`: after every file of checkpoint N is written, before its state file and rename.
"""

import argparse
import json
import os
import signal
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from safetensors.torch import save_file

import realm_hf.retrieval.index
import realm_hf.training.pretraining
from realm_hf import (
    DataCollatorForRealmPreTraining,
    RealmConfig,
    RealmForPreTraining,
    RealmIndex,
    RealmPreTrainingArguments,
    RealmTokenizerFast,
    ShardedRealmIndex,
    embed_corpus,
    make_accelerator,
    tag_salient_spans,
    train_realm,
)
from realm_hf.demo.synthetic import make_synthetic_knowledge
from realm_hf.file_utils import atomic_write_text
from realm_hf.retrieval.corpus import tokenize_blocks
from realm_hf.training import checkpointing
from realm_hf.training.checkpointing import latest_checkpoint


KILL_ENV = "REALM_TEST_KILL_AT"


def kill_points() -> set[tuple[str, int]]:
    """The (stage, step) pairs of `REALM_TEST_KILL_AT`."""
    points = set()
    for item in filter(None, os.environ.get(KILL_ENV, "").split(",")):
        stage, step = item.split(":")
        points.add((stage, int(step)))
    return points


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill_hooks(points: set[tuple[str, int]], accelerator) -> None:
    """Wraps the loop's functions so that the process kills itself at the requested (stage, step) points."""
    if not points:
        return
    schedulers = []  # the loop's LR schedule: its `last_epoch` is the optimizer step (restored on resume)

    def current_step() -> int:
        return schedulers[0].last_epoch if schedulers else 0

    original_schedule = realm_hf.training.pretraining.make_scheduler
    original_optimizer = realm_hf.training.pretraining._optimizer

    def schedule(*args, **kwargs):
        schedulers.append(original_schedule(*args, **kwargs))
        return schedulers[-1]

    def optimizer(*args, **kwargs):
        result = original_optimizer(*args, **kwargs)

        def after_step(opt, opt_args, opt_kwargs):  # the schedule steps right after: this is step last_epoch + 1
            if ("step", current_step() + 1) in points:
                die()

        result.register_step_post_hook(after_step)
        return result

    original_refresh = realm_hf.retrieval.refresh.refresh_index

    def refresh(*args, **kwargs):
        new_index = original_refresh(*args, **kwargs)
        if ("refresh", current_step()) in points:
            die()
        return new_index

    original_write_files = realm_hf.retrieval.index.RealmIndex._write_files

    def write_files(index, directory):
        if ("index-save", current_step()) in points:
            realm_hf.retrieval.index.write_corpus(index.corpus, directory / index.config.corpus_dir)
            die()
        original_write_files(index, directory)

    original_save_state = checkpointing.save_state

    def save_state(state, directory, name):
        original_save_state(state, directory, name)
        if ("checkpoint", current_step()) in points and name == checkpointing.OPTIMIZER_NAME:
            tensors = Path(directory) / f"{name}.safetensors"
            data = tensors.read_bytes()
            tensors.write_bytes(data[: len(data) // 2])  # as if killed while the file was being written
            die()

    original_write_training_state = checkpointing.write_training_state

    def write_training_state(*args, **kwargs):
        original_write_training_state(*args, **kwargs)
        if ("checkpoint-end", current_step()) in points:
            die()

    realm_hf.training.pretraining.make_scheduler = schedule
    realm_hf.training.pretraining._optimizer = optimizer
    realm_hf.retrieval.refresh.refresh_index = refresh
    realm_hf.retrieval.index.RealmIndex._write_files = write_files
    checkpointing.save_state = save_state
    checkpointing.write_training_state = write_training_state


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--save-steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--refresh-steps", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hang-at-step", type=int, default=0)
    parser.add_argument("--optim", default="adamw_torch")
    parser.add_argument("--crash-rank-at-step", default=None, help="RANK:STEP: that process dies at that step.")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--async-refresh", action="store_true", help="index_refresh_mode='async'")
    parser.add_argument("--sharded-index", action="store_true", help="each process holds 1/N of the index")
    parser.add_argument("--external-refresh", action="store_true", help="index_refresh_mode='external'")
    parser.add_argument("--step-sleep", type=float, default=0.0, help="seconds to sleep after each step")
    parser.add_argument(
        "--plain-accelerator", action="store_true", help="a caller's own Accelerator, without a project_dir"
    )
    args = parser.parse_args()
    output_dir = Path(args.output_dir)

    knowledge = make_synthetic_knowledge(num_people=6, num_cities=3, num_countries=2, seed=3)
    vocab_dir = output_dir.parent / f"{output_dir.name}-tokenizer"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    # Atomically: with torchrun every process writes it, and another may be reading it meanwhile.
    atomic_write_text(vocab_dir / "vocab.txt", "\n".join(knowledge.vocabulary()) + "\n")
    tokenizer = RealmTokenizerFast.from_pretrained(str(vocab_dir))
    corpus = tokenize_blocks(knowledge.documents, tokenizer)
    sentences = tag_salient_spans(knowledge.documents, tokenizer)
    # One salient span per sentence: masking is then the same whichever process collates the sentence.
    sentences = sentences.filter(lambda row: len(row["salient_spans"]) > 0)
    sentences = sentences.map(lambda row: {"salient_spans": row["salient_spans"][:1]})

    torch.manual_seed(0)
    config = RealmConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        retriever_proj_size=16, max_position_embeddings=128, num_candidates=4, block_seq_len=64, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = RealmForPreTraining(config)
    index = RealmIndex.build(
        corpus, embed_corpus(model.embedder, corpus, tokenizer, show_progress=False), show_progress=False
    )
    collator = DataCollatorForRealmPreTraining(tokenizer, max_length=32, seed=0)
    train_args = RealmPreTrainingArguments(
        output_dir=str(output_dir), max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, optim=args.optim, save_steps=args.save_steps, index_refresh_steps=args.refresh_steps, logging_steps=1,
        index_refresh_mode="async" if args.async_refresh else ("external" if args.external_refresh else "sync"),
        eval_steps=1 if (args.hang_at_step or args.crash_rank_at_step or args.step_sleep) else 0, use_cpu=True, disable_tqdm=True,
        resume_from_checkpoint="latest" if args.resume else None,
    )  # fmt: skip
    accelerator = make_accelerator(train_args)
    if args.plain_accelerator:
        accelerator = Accelerator(
            cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
        )

    if args.sharded_index:  # after the Accelerator: the process group is up
        index = ShardedRealmIndex.from_index(index)
    install_kill_hooks(kill_points(), accelerator)
    resumed_from = latest_checkpoint(output_dir) if args.resume else None

    crash = tuple(int(x) for x in args.crash_rank_at_step.split(":")) if args.crash_rank_at_step else None

    def hang(model, retriever, step):
        if crash is not None and (accelerator.process_index, step) == crash:
            os._exit(3)
        time.sleep(args.step_sleep)
        if step == args.hang_at_step:
            (output_dir / "hanging").write_text(str(step))
            time.sleep(600)
        return {}

    history = train_realm(
        model, tokenizer, index, sentences, collator, train_args, eval_fn=hang, accelerator=accelerator
    )
    if accelerator.is_main_process:
        params = {k: v.detach().contiguous().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        save_file(params, str(output_dir / "final.safetensors"))
        result = {"num_processes": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type),
                  "history": history, "resumed_from": resumed_from.name if resumed_from else None}  # fmt: skip
        (output_dir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
