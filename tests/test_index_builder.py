"""The separate index builder (`realm-hf index-builder --watch`) and a trainer with `index_refresh_mode="external"`,
as two processes: the builder killed and restarted, training never blocked, every checkpoint naming the index it
trained with, and the trainer resumed after a kill with that index."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from realm_hf.retrieval.refresh import export_steps, published_index_steps


REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "tests" / "scripts" / "tiny_pretraining.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def _start(*command: str) -> subprocess.Popen:
    return subprocess.Popen(list(command), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _builder(output_dir: Path) -> subprocess.Popen:
    return _start(sys.executable, "-m", "realm_hf.cli", "index-builder", "--watch", str(output_dir),
                  "--poll-seconds", "0.1", "--no-progress")  # fmt: skip


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


@pytest.mark.distributed
def test_external_builder_killed_and_restarted_never_blocks_training(tmp_path):
    run = tmp_path / "run"
    indexes = run / "indexes"
    trainer = _start(sys.executable, str(SCRIPT), str(run), "--external-refresh", "--refresh-steps", "2",
                     "--max-steps", "80", "--save-steps", "10", "--step-sleep", "0.25")  # fmt: skip
    try:
        _wait_until(lambda: export_steps(indexes), 120, "the trainer exported no document tower")
        builder = _builder(run)
        _wait_until(lambda: max(published_index_steps(indexes)) > 0, 120, "the builder published no index")
        builder.send_signal(signal.SIGKILL)  # the builder dies; training goes on with the index it has
        builder.wait()
        killed_at = max(published_index_steps(indexes))
        _wait_until(lambda: max(export_steps(indexes), default=0) > killed_at + 6, 60, "training stopped")
        assert max(published_index_steps(indexes)) == killed_at  # nobody built meanwhile
        restarted = _builder(run)  # picks up the newest export
        _wait_until(lambda: max(published_index_steps(indexes)) > killed_at, 120, "the restarted builder built none")
        assert trainer.wait(timeout=300) == 0, trainer.stderr.read()[-3000:]
        assert restarted.wait(timeout=120) == 0  # it stops once the run has written final/
    finally:
        for process in (trainer, locals().get("builder"), locals().get("restarted")):
            if process is not None and process.poll() is None:
                process.kill()
    history = json.loads((run / "result.json").read_text())["history"]
    assert [r["step"] for r in history][-1] == 80
    swapped = [r["step"] - r["index_staleness"] for r in history if "index_refresh_seconds" in r]
    assert swapped and len(set(swapped)) >= 2, history  # indexes of the first and of the restarted builder
    assert any(step > killed_at for step in swapped)
    # Every checkpoint names the index it trained with, and that index is kept.
    for checkpoint in sorted(run.glob("checkpoint-*")):
        index_step = json.loads((checkpoint / "trainer_state.json").read_text())["index_step"]
        assert (indexes / f"step-{index_step}" / "index_config.json").is_file(), checkpoint
    assert (run / "final" / "index" / "index_config.json").is_file()


@pytest.mark.distributed
def test_external_refresh_trainer_resumes_with_the_index_of_its_checkpoint(tmp_path):
    """No builder at all: the trainer keeps its initial index (staleness grows) and exports only; killed and resumed,
    it reloads the index its checkpoint names."""
    run = tmp_path / "run"
    common = [sys.executable, str(SCRIPT), str(run), "--external-refresh", "--refresh-steps", "2", "--save-steps", "3"]
    subprocess.run([*common, "--max-steps", "4"], env=ENV, check=True, capture_output=True, timeout=300)
    history = json.loads((run / "result.json").read_text())["history"]
    assert [r["index_staleness"] for r in history if r["step"] in (2, 4)] == [2, 4]  # never blocked, never swapped
    assert export_steps(run / "indexes") == [2, 4]
    subprocess.run([*common, "--max-steps", "6", "--resume"], env=ENV, check=True, capture_output=True, timeout=300)
    resumed = json.loads((run / "result.json").read_text())
    assert resumed["resumed_from"] == "checkpoint-4" and resumed["history"][-1]["step"] == 6


@pytest.mark.distributed
def test_builder_over_two_processes_publishes_the_single_process_index(tmp_path):
    """`torchrun --nproc_per_node 2 -m realm_hf.cli index-builder`: each process embeds half of the blocks, the main
    one publishes; the index equals the one a single-process builder publishes from the same export."""
    import numpy as np
    import torch

    from realm_hf import RealmConfig, RealmForPreTraining, RealmIndex, embed_corpus
    from realm_hf.demo.job import build_tokenizer
    from realm_hf.demo.synthetic import make_synthetic_knowledge
    from realm_hf.retrieval.corpus import tokenize_blocks
    from realm_hf.retrieval.refresh import export_document_tower
    from realm_hf.training.index_builder import run_index_builder

    knowledge = make_synthetic_knowledge(num_people=6, num_cities=3, seed=3)
    tokenizer = build_tokenizer(knowledge.vocabulary(), tmp_path / "tokenizer")
    torch.manual_seed(0)
    model = RealmForPreTraining(RealmConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=37, retriever_proj_size=16,
                                            max_position_embeddings=128))  # fmt: skip
    corpus = tokenize_blocks(knowledge.documents, tokenizer)
    index = RealmIndex.build(corpus, embed_corpus(model.embedder, corpus, tokenizer, show_progress=False))
    with torch.no_grad():  # the trainer's tower has moved since the initial index
        for parameter in model.embedder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    for run in ("one", "two"):  # what train_realm leaves: the initial index, and an export of step 2
        index.save_pretrained(tmp_path / run / "indexes" / "step-0")
        export_document_tower(model.embedder, tokenizer, tmp_path / run / "indexes", 2)
    assert [b["step"] for b in run_index_builder(tmp_path / "one", max_builds=1)] == [2]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "realm_hf.cli",
               "index-builder", "--watch", str(tmp_path / "two"), "--max-builds", "1", "--no-progress"]  # fmt: skip
    completed = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count('"step": 2') == 1  # the main process reports: two processes, not two runs
    one = RealmIndex.from_pretrained(tmp_path / "one" / "indexes" / "step-2")
    two = RealmIndex.from_pretrained(tmp_path / "two" / "indexes" / "step-2")
    np.testing.assert_allclose(np.asarray(two.embeddings), np.asarray(one.embeddings), atol=1e-5)
    assert not np.allclose(np.asarray(one.embeddings), np.asarray(index.embeddings), atol=1e-3)
    assert one.config.embedder_fingerprint == two.config.embedder_fingerprint
