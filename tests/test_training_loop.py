"""Pre-training loop: checkpoints, resume after SIGKILL, 2-process training, ICT, index refresh."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from realm_hf import (
    AsyncIndexRefresher,
    DataCollatorForInverseClozeTask,
    IndexRefreshSchedule,
    InverseClozeTaskArguments,
    RealmConfig,
    RealmForPreTraining,
    RealmIndex,
    embed_corpus,
    prepare_ict_examples,
    refresh_index,
    train_inverse_cloze_task,
)
from realm_hf.demo.job import DemoArguments, build_tokenizer, demo_config
from realm_hf.demo.synthetic import make_synthetic_knowledge
from realm_hf.retrieval.corpus import tokenize_blocks
from realm_hf.training.checkpointing import latest_checkpoint

from .utils import REPO_ROOT, SCRIPT, assert_same_parameters, kill_when_hanging, run_script


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    run_script(tmp_path / "full")
    killed = tmp_path / "killed"
    command = [sys.executable, str(SCRIPT), str(killed), "--hang-at-step", "5"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    kill_when_hanging(command, killed / "hanging", env, "step 5")
    assert latest_checkpoint(killed).name == "checkpoint-3"
    assert not (killed / "final.safetensors").exists()
    run_script(killed, "--resume")
    assert_same_parameters(tmp_path / "full" / "final.safetensors", killed / "final.safetensors", atol=1e-6)
    history = json.loads((killed / "result.json").read_text())["history"]
    assert [r["step"] for r in history] == list(range(1, 7))

    # The trained model is saved the HF way: a fresh process loads it with AutoModelForPreTraining, with its
    # tokenizer and the index it was trained with, and gets the trained parameters.
    final = tmp_path / "full" / "final"
    assert {"config.json", "model.safetensors", "README.md", "index"} <= {p.name for p in final.iterdir()}
    check = (
        "import sys, torch, realm_hf\n"
        "from safetensors.torch import load_file\n"
        "from transformers import AutoModelForPreTraining, AutoTokenizer\n"
        "model = AutoModelForPreTraining.from_pretrained(sys.argv[1])\n"
        "assert type(model).__name__ == 'RealmForPreTraining'\n"
        "AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "retriever = realm_hf.RealmRetriever.from_pretrained(sys.argv[1])\n"
        "assert retriever.index.check_embedder(model.embedder)\n"
        "trained = load_file(sys.argv[2])\n"
        "state = model.state_dict()\n"
        "assert all(torch.equal(state[k], v) for k, v in trained.items() if k in state), 'parameters differ'\n"
    )
    subprocess.run(
        [sys.executable, "-c", check, str(final), str(tmp_path / "full" / "final.safetensors")],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
    )
    # ... and the sub-models in the layout of the published pre-training checkpoints, each loadable by its class.
    from realm_hf import RealmEmbedder, RealmKnowledgeAugEncoder, RealmScorer

    for name, cls in (("embedder", RealmEmbedder), ("encoder", RealmKnowledgeAugEncoder), ("scorer", RealmScorer)):
        assert type(cls.from_pretrained(tmp_path / "full" / "submodels" / name)) is cls


@pytest.mark.distributed
def test_two_processes_match_one_process(tmp_path):
    # SGD: Adam's first steps turn rounding-level gradient differences into +-lr updates.
    sgd = ["--optim", "sgd", "--learning-rate", "0.5", "--max-steps", "2"]
    run_script(tmp_path / "one", *sgd, "--batch-size", "4")
    run_script(tmp_path / "two", *sgd, "--batch-size", "2", torchrun=True)
    result = json.loads((tmp_path / "two" / "result.json").read_text())
    assert result["num_processes"] == 2 and "MULTI_CPU" in result["distributed_type"]
    assert json.loads((tmp_path / "one" / "result.json").read_text())["num_processes"] == 1
    # One optimizer step on the same global batch of 4 sentences, then a second one.
    assert_same_parameters(tmp_path / "one" / "final.safetensors", tmp_path / "two" / "final.safetensors", atol=1e-5)
    # The synchronous refresh at step 2 embedded the corpus split over 2 processes: same index as with 1.
    one = RealmIndex.from_pretrained(tmp_path / "one" / "indexes" / "step-2")
    two = RealmIndex.from_pretrained(tmp_path / "two" / "indexes" / "step-2")
    np.testing.assert_allclose(np.asarray(one.embeddings), np.asarray(two.embeddings), atol=1e-5)


@pytest.mark.distributed
def test_async_refresh_with_the_callers_accelerator_in_two_processes(tmp_path):
    """A caller's own Accelerator (no project_dir) with async refresh over 2 processes: the new index is shared and
    saved under output_dir, where checkpoints and resume look for it."""
    args = ["--async-refresh", "--plain-accelerator", "--save-steps", "2", "--refresh-steps", "1"]
    run_script(tmp_path / "run", *args, "--max-steps", "4", torchrun=True)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["num_processes"] == 2
    swapped = [r["step"] for r in result["history"] if "index_refresh_seconds" in r]
    assert swapped, result["history"]  # at least one background refresh was swapped in, on both processes
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())
    assert (tmp_path / "run" / "indexes" / f"step-{state['index_step']}" / "index_config.json").is_file()
    run_script(tmp_path / "run", *args, "--max-steps", "6", "--resume", torchrun=True)
    resumed = json.loads((tmp_path / "run" / "result.json").read_text())
    assert resumed["resumed_from"] == "checkpoint-4"
    assert [r["step"] for r in resumed["history"]][-2:] == [5, 6]


@pytest.mark.distributed
def test_one_process_dying_stops_the_other(tmp_path):
    """Rank 1 dies at step 2: the launcher ends the run with an error in bounded time instead of hanging."""
    output_dir = tmp_path / "crash"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(SCRIPT), str(output_dir),
               "--crash-rank-at-step", "1:2", "--max-steps", "6"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    began = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert time.monotonic() - began < 240
    assert "Root Cause" in result.stderr and re.search(r"rank\s*:\s*1 .*\n\s*exitcode\s*:\s*3\b", result.stderr)
    assert not (output_dir / "final.safetensors").exists()


# ------------------------------------------------------------------------------------------------------------------
# ICT and refresh (in process)
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory):
    knowledge = make_synthetic_knowledge(num_people=10, num_cities=3, seed=2)
    path = tmp_path_factory.mktemp("tok")
    tokenizer = build_tokenizer(knowledge.vocabulary(), path)
    corpus = tokenize_blocks(knowledge.documents, tokenizer)
    return knowledge, tokenizer, corpus


def small_model(tokenizer, hidden_size=32, num_hidden_layers=1):
    torch.manual_seed(0)
    return RealmForPreTraining(
        RealmConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=2,
            intermediate_size=2 * hidden_size,
            retriever_proj_size=16,
            max_position_embeddings=128,
            num_candidates=3,
            block_seq_len=64,
            hidden_act="gelu",
        )  # fmt: skip
    )


def test_inverse_cloze_task_learns(tmp_path):
    # Enough people that a batch of 8 rarely holds both documents of one person (they share the name and title, so
    # either would be a right answer and in-batch accuracy could not approach 1).
    knowledge = make_synthetic_knowledge(num_people=40, num_cities=5, seed=2)
    tokenizer = build_tokenizer(knowledge.vocabulary(), tmp_path)
    torch.manual_seed(0)
    model = RealmForPreTraining(demo_config(tokenizer, DemoArguments(hidden_size=64)))  # no dropout
    examples = prepare_ict_examples(knowledge.documents, tokenizer)
    collator = DataCollatorForInverseClozeTask(tokenizer, query_max_length=32, block_max_length=64, seed=0)
    history = train_inverse_cloze_task(
        model, examples, collator,
        InverseClozeTaskArguments(max_steps=80, per_device_train_batch_size=8, learning_rate=1e-3, logging_steps=10,
                                  disable_tqdm=True, output_dir=str(tmp_path)),
    )  # fmt: skip
    assert history[0]["loss"] > history[-1]["loss"]
    # In-batch retrieval among 8 blocks: chance is 1/8.
    assert history[-1]["ict_accuracy"] > 4 * (1 / 8) and history[-1]["ict_accuracy"] > history[0]["ict_accuracy"]


def test_refresh_schedule():
    schedule = IndexRefreshSchedule(every_n_steps=3)
    assert [s for s in range(10) if schedule.should_refresh(s)] == [3, 6, 9]
    assert not any(IndexRefreshSchedule(every_n_steps=0).should_refresh(s) for s in range(10))
    with pytest.raises(ValueError):
        IndexRefreshSchedule(every_n_steps=-1)


def test_sync_and_async_refresh_give_the_new_embeddings(small_setup):
    _, tokenizer, corpus = small_setup
    model = small_model(tokenizer)
    old = RealmIndex.build(
        corpus, embed_corpus(model.embedder, corpus, tokenizer, show_progress=False), show_progress=False
    )
    with torch.no_grad():
        model.embedder.cls.dense.weight.mul_(-1.5)
    expected = embed_corpus(model.embedder, corpus, tokenizer, show_progress=False)
    synced = refresh_index(model.embedder, old, tokenizer)
    np.testing.assert_allclose(np.asarray(synced.embeddings), expected, atol=1e-6)
    assert not np.allclose(np.asarray(old.embeddings), expected)
    assert synced.check_embedder(model.embedder) is True

    refresher = AsyncIndexRefresher(tokenizer)
    assert refresher.start(model.embedder, old, step=7)
    with torch.no_grad():  # training goes on: the refresh embeds the snapshot, not these weights
        model.embedder.cls.dense.weight.mul_(3.0)
    record = refresher.wait(timeout=60)
    assert record.step == 7
    np.testing.assert_allclose(np.asarray(record.index.embeddings), expected, atol=1e-6)


def test_failed_async_refresh_keeps_previous_index(small_setup):
    _, tokenizer, corpus = small_setup
    model = small_model(tokenizer)
    index = RealmIndex.build(
        corpus, embed_corpus(model.embedder, corpus, tokenizer, show_progress=False), show_progress=False
    )
    refresher = AsyncIndexRefresher(tokenizer)

    class Broken(torch.nn.Module):
        config = model.config

        def forward(self, **kwargs):
            raise RuntimeError("device lost")

    broken = Broken()
    broken.dummy = torch.nn.Linear(1, 1)
    refresher.start(broken, index, step=3)
    with pytest.raises(RuntimeError, match="previous index stays in service"):
        refresher.wait(timeout=60)
