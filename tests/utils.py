"""Helpers shared by several test modules (fixtures live in `conftest.py`); no test module imports another."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from safetensors.torch import load_file

from realm_hf.retrieval.corpus import tokenize_blocks
from realm_hf.retrieval.index import RealmIndex
from realm_hf.retrieval.legacy import load_legacy_block_emb
from realm_hf.retrieval.retriever import RealmRetriever


REPO_ROOT = Path(__file__).resolve().parents[1]
#: Tiny checkpoints saved by the original implementation (transformers 4.46.3), with their inputs and outputs.
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"
#: The tiny pre-training run of the resume and distributed tests.
SCRIPT = Path(__file__).resolve().parent / "scripts" / "tiny_pretraining.py"
EXAMPLES = REPO_ROOT / "examples"
#: The vocabulary of the tiny tokenizer fixtures.
TINY_VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] the a an is was of in to and who what when where which capital city "
    "country born wrote paris france berlin germany rome italy alan turing computer scientist mathematician "
    "ada lovelace poet london england first second third fourth fifth record test question this , . ? "
    "##s ##ed ##ing"
).split()
#: File endings of pickles (and `torch.save` archives) that no realm_hf checkpoint may hold.
PICKLE_ENDINGS = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")
#: Batch size, candidates and sequence length of the model tests.
B, N, L = 2, 3, 9


def tiny_config_kwargs() -> dict:
    return {
        "vocab_size": 64,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "retriever_proj_size": 16,
        "span_hidden_size": 24,
        "max_span_width": 4,
        "num_candidates": 3,
        "reader_beam_size": 3,
        "searcher_beam_size": 5,
        "num_block_records": 8,
        "reader_seq_len": 32,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def pretraining_trainer(output_dir, model, tokenizer, knowledge, callbacks, max_steps=4, learning_rate=1e-3):
    """The HF `Trainer` over the world's masked sentences: `max_steps` steps of 4 sentences, on the CPU, no
    checkpoints."""
    from transformers import Trainer, TrainingArguments

    from realm_hf import DataCollatorForRealmPreTraining
    from realm_hf.training.masking import tag_salient_spans

    return Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(output_dir),
            max_steps=max_steps,
            per_device_train_batch_size=4,
            learning_rate=learning_rate,
            remove_unused_columns=False,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            logging_steps=1,
        ),  # fmt: skip
        train_dataset=tag_salient_spans(knowledge.documents, tokenizer),
        data_collator=DataCollatorForRealmPreTraining(tokenizer, max_length=32, seed=0),
        callbacks=callbacks,
    )


def synthetic_config(tokenizer, **overrides):
    """A tiny `RealmConfig` for the `synthetic_tokenizer` fixture's world (4 candidates, blocks of 48 tokens)."""
    from realm_hf import RealmConfig

    kwargs = {**tiny_config_kwargs(), "vocab_size": len(tokenizer), "num_candidates": 4, "block_seq_len": 48}
    return RealmConfig(**{**kwargs, **overrides})


def run_script(
    output_dir: Path, *args: str, torchrun: bool = False, timeout: int = 300
) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), str(output_dir), *args]
    if torchrun:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            str(SCRIPT),
            str(output_dir),
            *args,
        ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=output_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def kill_when_hanging(command: list[str], marker: Path, env: dict, what: str, timeout: float = 300) -> None:
    """Starts `command`, waits for it to write `marker` (it then sleeps where a test wants it killed) and SIGKILLs it.
    Fails if the process ends first or does not get there within `timeout` seconds."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"the run did not reach {what} in time"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()


def assert_same_parameters(a: Path, b: Path, atol: float) -> None:
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=atol, rtol=0, msg=name)


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predict(model, tokenizer, questions: list[str]) -> dict:
    """Predicted answers, retrieved block ids and retrieval logits of `model` (also run in the subprocess)."""
    out = {"answers": [], "block_ids": [], "logits": []}
    for question in questions:
        inputs = tokenizer([question], return_tensors="pt")
        with torch.no_grad():
            output = model(**inputs)
        out["answers"].append(tokenizer.decode(output.predicted_answer_ids))
        out["block_ids"].append(output.retrieved_block_ids[0].tolist())
        out["logits"].append(output.retrieved_logits[0].tolist())
    return out


def make_corpus(texts, tokenizer) -> datasets.Dataset:
    """A corpus of `texts`, one pre-tokenized block each."""
    return tokenize_blocks(datasets.Dataset.from_dict({"text": list(texts)}), tokenizer)


def make_retriever(texts, tokenizer, embeddings=None) -> RealmRetriever:
    """A retriever over `texts` (one block each), with the given block embeddings (the identity by default)."""
    corpus = make_corpus(texts, tokenizer)
    if embeddings is None:
        embeddings = np.eye(len(texts), dtype=np.float32)
    index = RealmIndex.build(corpus, np.asarray(embeddings, dtype=np.float32), show_progress=False)
    return RealmRetriever(index, tokenizer)


def openqa_retriever(tokenizer, blocks, source="legacy_bin") -> RealmRetriever:
    """The retriever of the reference open-QA checkpoint: its block embeddings over `blocks`."""
    block_emb = load_legacy_block_emb(REFERENCE / "openqa" / source)
    return make_retriever(blocks, tokenizer, embeddings=block_emb.numpy())


class RunsCode:
    """Unpickling it creates the file `path`: the stand-in for a hostile payload that runs code when loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def random_inputs(config, *shape):
    """Random token ids (no special tokens) of `shape`."""
    return torch.randint(5, config.vocab_size, shape)


# ------------------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------------------


def reader_batch(config, rows=3, seq_len=12, k=5):
    """Reader inputs of `rows` candidates with answer spans in blocks 1 and 2."""
    ids = random_inputs(config, rows, seq_len)
    token_type_ids = torch.zeros_like(ids)
    token_type_ids[:, 4:] = 1
    block_mask = torch.zeros_like(ids, dtype=torch.bool)
    block_mask[:, 4:-1] = True
    start = torch.full((k, 2), -1)
    end = torch.full((k, 2), -1)
    start[1, 0], end[1, 0] = 5, 6
    start[2, :], end[2, :] = torch.tensor([4, 8]), torch.tensor([4, 9])
    has_answers = start[:, 0] >= 0
    return {
        "input_ids": ids,
        "token_type_ids": token_type_ids,
        "attention_mask": torch.ones_like(ids),
        "block_mask": block_mask,
        "relevance_score": torch.randn(k),
        "start_positions": start,
        "end_positions": end,
        "has_answers": has_answers,
    }
