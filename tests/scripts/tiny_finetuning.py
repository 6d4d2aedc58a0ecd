"""Tiny open-QA fine-tuning run (`RealmForOpenQA` + `RealmTrainer`) used by the kill-and-resume tests.

Usage: python tiny_finetuning.py OUTPUT_DIR [--max-steps N] [--save-steps N] [--resume]

Writes OUTPUT_DIR/result.json (global step, the checkpoint it resumed from, the loss history) and
OUTPUT_DIR/final.safetensors (parameters). Dropout is on, so an exact resume needs the RNG states of the checkpoint.

Fault injection (test-only, no hook in the package): `REALM_TEST_KILL_AT="STAGE:STEP[,STAGE:STEP...]"` makes the
process SIGKILL itself at a named stage of an optimizer step:

- `step:N`: right after optimizer step N, before its checkpoint;
- `checkpoint:N`: in the middle of writing checkpoint N (`optimizer.safetensors` half written);
- `checkpoint-end:N`: after every file of checkpoint N is written, before it is published under its final name.
"""

import argparse
import json
import os
import signal
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import TrainerCallback, TrainerState, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from realm_hf import RealmConfig, RealmForOpenQA, RealmIndex, RealmRetriever, RealmTokenizerFast, embed_corpus
from realm_hf.demo.synthetic import make_synthetic_knowledge
from realm_hf.file_utils import atomic_write_text
from realm_hf.retrieval.corpus import tokenize_blocks
from realm_hf.training.openqa import DataCollatorForRealmOpenQA, RealmTrainer


KILL_ENV = "REALM_TEST_KILL_AT"


def kill_points() -> set[tuple[str, int]]:
    """The (stage, step) pairs of `REALM_TEST_KILL_AT`."""
    spec = os.environ.get(KILL_ENV, "")
    points = set()
    for item in filter(None, spec.split(",")):
        stage, step = item.split(":")
        points.add((stage, int(step)))
    return points


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillCallback(TrainerCallback):
    """SIGKILLs the process after optimizer step N (`step:N`)."""

    def __init__(self, points):
        self.points = points

    def on_step_end(self, args, state, control, **kwargs):
        if ("step", state.global_step) in self.points:
            die()


def install_checkpoint_hooks(trainer: RealmTrainer, points) -> None:
    """Kill points inside the checkpoint write, by wrapping methods in this process (nothing in the package)."""
    if not any(stage.startswith("checkpoint") for stage, _ in points):
        return
    original_save_optimizer = trainer._save_optimizer_and_scheduler
    original_save_state = TrainerState.save_to_json

    def save_optimizer_and_scheduler(output_dir):
        original_save_optimizer(output_dir)
        if ("checkpoint", trainer.state.global_step) in points:
            optimizer_file = Path(output_dir) / "optimizer.safetensors"
            data = optimizer_file.read_bytes()
            optimizer_file.write_bytes(data[: len(data) // 2])  # as if killed while the file was being written
            die()

    def save_to_json(state, json_path):
        original_save_state(state, json_path)
        if ("checkpoint-end", state.global_step) in points:
            die()

    trainer._save_optimizer_and_scheduler = save_optimizer_and_scheduler
    TrainerState.save_to_json = save_to_json


def build_trainer(output_dir: Path, max_steps: int = 6, save_steps: int = 2, callbacks=None, **training_args):
    """The tiny RealmForOpenQA (random weights, dropout 0.1) and its RealmTrainer on a synthetic QA set."""
    knowledge = make_synthetic_knowledge(num_people=4, num_cities=3, num_countries=2, seed=5)
    vocab_dir = output_dir.parent / f"{output_dir.name}-tokenizer"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    # Atomically: with torchrun every process writes it, and another may be reading it meanwhile.
    atomic_write_text(vocab_dir / "vocab.txt", "\n".join(knowledge.vocabulary()) + "\n")
    tokenizer = RealmTokenizerFast.from_pretrained(str(vocab_dir))
    corpus = tokenize_blocks(knowledge.documents, tokenizer)

    torch.manual_seed(0)
    config = RealmConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
        retriever_proj_size=16, span_hidden_size=24, max_span_width=4, max_position_embeddings=128,
        reader_beam_size=3, searcher_beam_size=3, reader_seq_len=48, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )  # fmt: skip
    model = RealmForOpenQA(config)
    embeddings = embed_corpus(model.embedder, corpus, tokenizer, show_progress=False)
    model.set_retriever(RealmRetriever(RealmIndex.build(corpus, embeddings, show_progress=False), tokenizer))

    defaults = dict(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=4, learning_rate=1e-3,
        remove_unused_columns=False, report_to=[], use_cpu=True, save_strategy="steps", save_steps=save_steps,
        save_total_limit=2, logging_steps=1, seed=7, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    questions = knowledge.questions.select_columns(["question", "answers"])
    return RealmTrainer(
        model=model,
        args=TrainingArguments(**{**defaults, **training_args}),
        train_dataset=questions,
        eval_dataset=questions,
        data_collator=DataCollatorForRealmOpenQA(tokenizer, max_question_length=24),
        callbacks=callbacks,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--save-steps", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    output_dir = Path(args.output_dir)
    points = kill_points()

    trainer = build_trainer(output_dir, args.max_steps, args.save_steps, [KillCallback(points)] if points else None)
    install_checkpoint_hooks(trainer, points)
    resumed_from = get_last_checkpoint(str(output_dir)) if args.resume and output_dir.is_dir() else None
    trainer.train(resume_from_checkpoint=resumed_from)

    params = {k: v.detach().contiguous().clone() for k, v in trainer.model.state_dict().items()}
    save_file(params, str(output_dir / "final.safetensors"))
    losses = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    result = {
        "global_step": trainer.state.global_step,
        "resumed_from": Path(resumed_from).name if resumed_from else None,
        "losses": losses,
    }
    (output_dir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
