"""Fine-tuning [`RealmForOpenQA`] on question/answer pairs with the [`~transformers.Trainer`].

As in the REALM paper, the block embeddings stay fixed during fine-tuning (they live in the [`RealmIndex`], not in
the model's parameters) while the query embedder and the reader train. A question whose answers appear in none of
the retrieved blocks contributes zero loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import rotate_checkpoints

from ..file_utils import atomic_write_text
from ..hub.model_card import RealmModelCardCallback, RealmModelCardData, save_model_card, training_logs_from_history
from ..logging import get_logger
from .checkpointing import (
    OPTIMIZER_NAME,
    RNG_STATE_NAME,
    check_no_pickle,
    checkpoint_dir,
    get_rng_state,
    load_state,
    publish_staged,
    save_state,
    set_rng_state,
    staging_dir,
    start_staging,
)


logger = get_logger(__name__)

#: The training arguments saved with a model, as JSON (`TrainingArguments.to_json_string`).
TRAINING_ARGS_JSON = "training_args.json"


@dataclass
class DataCollatorForRealmOpenQA:
    r"""
    Batches open-QA examples for [`RealmForOpenQA`].

    Each example has a `question` (`str`) and `answers` (`list[str]`, or a single `str`); other fields are ignored.
    The questions are tokenized as `[CLS] question [SEP]` and padded; the answers are tokenized without special
    tokens. Answers that tokenize to nothing are dropped, and a question without any usable answer keeps an empty
    list (it then contributes zero loss).

    `answer_ids` is a nested Python list, not a tensor, so train with `remove_unused_columns=False`; the
    [`~transformers.Trainer`] leaves non-tensors as they are when it moves a batch to the device.

    With `gold_documents=True`, every example also needs `gold_doc_ids` (an `int` or a list of them: the corpus
    `doc_id`s of the documents that answer it), passed on as `gold_doc_ids` so that the retriever is trained toward
    those documents instead of toward every block containing an answer (see [`RealmForOpenQA.forward`]).

    Args:
        tokenizer ([`PreTrainedTokenizerBase`]):
            The question tokenizer (the one of the model).
        max_question_length (`int`, *optional*, defaults to 64):
            Questions are truncated to this many tokens, special tokens included.
        gold_documents (`bool`, *optional*, defaults to `False`):
            Pass each example's `gold_doc_ids` on, to supervise the retriever with them.

    Returns (when called on a list of examples):
        `dict` with `input_ids`, `attention_mask`, `token_type_ids` (`torch.LongTensor` of shape
        `(batch_size, question_len)`), `answer_ids` (`list[list[list[int]]]`: per question, per answer, token ids)
        and, with `gold_documents`, `gold_doc_ids` (`list[list[int]]`).
    """

    tokenizer: PreTrainedTokenizerBase
    max_question_length: int = 64
    gold_documents: bool = False

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if len(examples) == 0:
            raise ValueError("DataCollatorForRealmOpenQA: got an empty list of examples.")
        questions = []
        for i, example in enumerate(examples):
            question = example.get("question")
            if question is not None and not isinstance(question, str):
                raise ValueError(f"DataCollatorForRealmOpenQA: example {i} has a non-string question {question!r}.")
            questions.append(question or "")
        batch = self.tokenizer(
            questions,
            padding=True,
            truncation=True,
            max_length=self.max_question_length,
            return_token_type_ids=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        answer_ids = [self.tokenize_answers(example.get("answers")) for example in examples]
        features = {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "token_type_ids": batch["token_type_ids"],
            "answer_ids": answer_ids,
        }
        if self.gold_documents:
            features["gold_doc_ids"] = [self.gold_doc_ids(i, example) for i, example in enumerate(examples)]
        return features

    @staticmethod
    def gold_doc_ids(i: int, example: Mapping[str, Any]) -> list[int]:
        """The `gold_doc_ids` of example `i` as a non-empty list of ints."""
        gold = example.get("gold_doc_ids")
        if isinstance(gold, int):
            gold = [gold]
        valid = isinstance(gold, (list, tuple)) and len(gold) > 0 and all(isinstance(d, int) for d in gold)
        if not valid:
            raise ValueError(
                f"DataCollatorForRealmOpenQA(gold_documents=True): example {i} needs `gold_doc_ids`, an int or a "
                f"non-empty list of ints (corpus doc_ids), got {gold!r}."
            )
        return list(gold)

    def tokenize_answers(self, answers: str | Iterable[str] | None) -> list[list[int]]:
        """Token ids (no special tokens) of each answer, dropping answers that are empty after tokenization."""
        if answers is None:
            return []
        if isinstance(answers, str):
            answers = [answers]
        answers = [a for a in answers if isinstance(a, str) and a.strip()]
        if not answers:
            return []
        ids = self.tokenizer(answers, add_special_tokens=False)["input_ids"]
        return [list(a) for a in ids if len(a) > 0]


class RealmTrainer(Trainer):
    r"""
    A [`~transformers.Trainer`] for [`RealmForOpenQA`]: the loss is `outputs.reader_output.loss`, the sum of the
    marginal retrieval and reader losses averaged over the questions of the batch.

    Use it with [`DataCollatorForRealmOpenQA`] (it sets `remove_unused_columns=False` itself). It attaches a
    [`RealmModelCardCallback`] (unless one is among `callbacks`; `card_data` seeds it), and every save writes the
    filled model card as `README.md` next to the weights (`trainer.card_callback.card_data`). The block
    embeddings are not parameters of the model (they live in the index), so they stay fixed while the query embedder
    and the reader train, as in the paper's fine-tuning. When no question of a batch has its answer in a retrieved
    block the loss is zero; if it is then not attached to the graph, a zero that is (and gives zero gradients) is
    returned instead so that the backward pass does not fail.

    Checkpoints hold safetensors and JSON only: the optimizer, schedule, gradient scaler and random states in
    realm_hf's checkpoint format ([`~realm_hf.training.checkpointing`]) instead of the `Trainer`'s `torch.save`
    pickles, and the training arguments as `training_args.json`; resuming from a checkpoint that holds any pickle file
    is refused before anything is read (DeepSpeed and FSDP keep their own formats). Checkpoints are written
    atomically: `checkpoint-<step>` is first written into a hidden staging directory
    (`.tmp-checkpoint-<step>/checkpoint-<step>`) and moved to its final name only when every file of every process is
    written. A run killed while saving therefore leaves the previous checkpoint as the newest one, and
    `trainer.train(resume_from_checkpoint=True)` resumes from it (the `Trainer` alone writes in place, and would pick
    the incomplete directory).
    """

    _checkpoint_staging_dir: Path | None = None

    def __init__(self, *args, card_data: RealmModelCardData | None = None, callbacks=None, **kwargs):
        callbacks = list(callbacks or [])
        if not any(isinstance(callback, RealmModelCardCallback) for callback in callbacks):
            callbacks.append(RealmModelCardCallback(card_data))
        super().__init__(*args, callbacks=callbacks, **kwargs)
        #: The model card the trainer fills (hyper-parameters, evaluation results, logs) and writes with every save.
        self.card_callback = next(c for c in self.callback_handler.callbacks if isinstance(c, RealmModelCardCallback))
        if self.args.remove_unused_columns:
            # `answer_ids` is a nested list the Trainer's column filter would drop: the collator picks its columns.
            logger.info(
                "RealmTrainer: setting remove_unused_columns=False (DataCollatorForRealmOpenQA picks its columns)."
            )
            self.args.remove_unused_columns = False
        if self.args.dataloader_pin_memory and not torch.cuda.is_available():
            self.args.dataloader_pin_memory = False  # nothing to pin for: only torch's warning

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Saves as the `Trainer` does, with the training arguments as JSON (not the `Trainer`'s pickled
        `training_args.bin`), and the model card of [`RealmModelCardCallback`] as `README.md`. `save_model` writes the
        model's retriever too (its index: the directory loads with `from_pretrained`); checkpoints do not (the
        index does not change while the model fine-tunes)."""
        model = self.accelerator.unwrap_model(self.model)
        checkpoint = self._checkpoint_staging_dir is not None and hasattr(model, "retriever_not_saved")
        with model.retriever_not_saved() if checkpoint else contextlib.nullcontext():
            super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            directory = Path(output_dir or self.args.output_dir)
            (directory / TRAINING_ARGS_NAME).unlink(missing_ok=True)
            atomic_write_text(directory / TRAINING_ARGS_JSON, self.args.to_json_string())
            self.card_callback.card_data.training_logs = training_logs_from_history(self.state.log_history)
            save_model_card(self.card_callback.card_data, directory)

    # -- checkpoints as safetensors + JSON (the Trainer's own are torch pickles) ---------------------------------

    @property
    def _plain_checkpoints(self) -> bool:
        """DeepSpeed and FSDP write their own sharded checkpoint formats; everything else uses realm_hf's."""
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self._plain_checkpoints:
            return super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            save_state(self.optimizer.state_dict(), output_dir, OPTIMIZER_NAME)
            save_state(self.lr_scheduler.state_dict(), output_dir, "scheduler")

    def _save_scaler(self, output_dir: str) -> None:
        if not self._plain_checkpoints:
            return super()._save_scaler(output_dir)
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and self.args.should_save:
            save_state(scaler.state_dict(), output_dir, "grad_scaler")

    def _save_rng_state(self, output_dir: str) -> None:
        if not self._plain_checkpoints:
            return super()._save_rng_state(output_dir)
        save_state(get_rng_state(), output_dir, f"{RNG_STATE_NAME}_{self.args.process_index}")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        check_no_pickle(resume_from_checkpoint)  # before anything of the checkpoint is read
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not self._plain_checkpoints:
            return super()._load_optimizer_and_scheduler(checkpoint)
        if (Path(checkpoint) / f"{OPTIMIZER_NAME}.json").is_file():
            self.optimizer.load_state_dict(load_state(checkpoint, OPTIMIZER_NAME))
            self.lr_scheduler.load_state_dict(load_state(checkpoint, "scheduler"))

    def _load_scaler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not self._plain_checkpoints:
            return super()._load_scaler(checkpoint)
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and (Path(checkpoint) / "grad_scaler.json").is_file():
            scaler.load_state_dict(load_state(checkpoint, "grad_scaler"))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None or not self._plain_checkpoints:
            return super()._load_rng_state(checkpoint)
        name = f"{RNG_STATE_NAME}_{self.args.process_index}"
        if (Path(checkpoint) / f"{name}.json").is_file():
            set_rng_state(load_state(checkpoint, name))
        else:
            logger.warning(f"{checkpoint} has no random state of process {self.args.process_index}.")

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Runs the model on the batch and returns the reader loss (and the outputs when `return_outputs`)."""
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            token_type_ids=inputs.get("token_type_ids"),
            answer_ids=inputs.get("answer_ids"),
            return_dict=True,
            gold_doc_ids=inputs.get("gold_doc_ids"),
        )
        loss = outputs.reader_output.loss
        if loss is None:
            raise ValueError("RealmTrainer: the model returned no loss; does the batch have `answer_ids`?")
        if loss.dim() > 0:
            loss = loss.mean()
        if torch.is_grad_enabled() and not loss.requires_grad:
            loss = _zero_with_grad(model, loss)
        return (loss, outputs) if return_outputs else loss

    def _get_output_dir(self, trial: Any) -> str:
        # While a checkpoint is being written, the Trainer writes it under the staging directory.
        if self._checkpoint_staging_dir is not None:
            return str(self._checkpoint_staging_dir)
        return super()._get_output_dir(trial=trial)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """Writes `checkpoint-<step>` into a staging directory, then moves it to its final name."""
        run_dir = Path(self._get_output_dir(trial=trial))
        step = self.state.global_step
        final = checkpoint_dir(run_dir, step)
        staged = staging_dir(run_dir, step) / final.name
        if self.args.should_save:
            start_staging(run_dir, step)
        self.accelerator.wait_for_everyone()
        self._checkpoint_staging_dir = staged.parent
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._checkpoint_staging_dir = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            self._fix_staged_best_checkpoint(staged, final)
            publish_staged(run_dir, step)
            logger.info(f"Saved checkpoint {final}.")
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub:
            self._push_from_checkpoint(str(final))

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Pushed once the checkpoint has its final name (see `_save_checkpoint`), never from the staging directory.
        if self._checkpoint_staging_dir is None:
            super()._push_from_checkpoint(checkpoint_folder)

    def _fix_staged_best_checkpoint(self, staged: Path, final: Path) -> None:
        """The Trainer recorded the best checkpoint under the staging directory when it is this one: point to `final`."""
        best = self.state.best_model_checkpoint
        if best is None or Path(best) != staged:
            return
        self.state.best_model_checkpoint = str(final)
        state_file = staged / "trainer_state.json"
        if state_file.is_file():
            state = TrainerState.load_from_json(str(state_file))
            state.best_model_checkpoint = str(final)
            state.save_to_json(str(state_file))


def _zero_with_grad(model: torch.nn.Module, like: torch.Tensor) -> torch.Tensor:
    """A zero attached to every trainable parameter (zero gradients), so `backward` works on an all-zero batch."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        return like
    zero = sum(p.sum() * 0.0 for p in trainable)
    return zero.to(like.dtype)


__all__ = ["DataCollatorForRealmOpenQA", "RealmTrainer"]
