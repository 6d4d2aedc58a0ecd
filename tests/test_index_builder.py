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
