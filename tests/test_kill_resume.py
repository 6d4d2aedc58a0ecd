"""Kill (SIGKILL) and resume: pre-training (`train_realm`) and open-QA fine-tuning (`RealmTrainer`).

Each run is a subprocess (`tests/scripts/tiny_pretraining.py`, `tests/scripts/tiny_finetuning.py`) that kills itself
at a named stage of a given optimizer step (`REALM_TEST_KILL_AT`, hooks in the scripts only): after a step, during an
index refresh, while writing an index, in the middle of a checkpoint file, after a checkpoint's files but before its
publication. The resumed run must start from the last *complete* checkpoint and end with the parameters of an
uninterrupted run with the same seed (1e-6), with the same per-step losses.

The default run covers a kill during an index refresh and one during a checkpoint write (chained in one pre-training
run), and one during a checkpoint write of fine-tuning; `-m slow` adds 6 seeded random kill points for each.
"""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers.trainer_utils import get_last_checkpoint

from realm_hf.training.checkpointing import latest_checkpoint

from .scripts.tiny_finetuning import build_trainer


SCRIPTS = Path(__file__).resolve().parent / "scripts"
REPO_ROOT = Path(__file__).resolve().parents[1]
PRETRAINING = SCRIPTS / "tiny_pretraining.py"
FINETUNING = SCRIPTS / "tiny_finetuning.py"
KILL_ENV = "REALM_TEST_KILL_AT"

# The scripts' defaults: pre-training 6 steps, checkpoints at 3 and 6, index refreshes at 2, 4 and 6;
# fine-tuning 6 steps, checkpoints at 2, 4 and 6.
MAX_STEPS = 6
PRETRAINING_SAVES = (3, 6)
PRETRAINING_REFRESHES = (2, 4, 6)
FINETUNING_SAVES = (2, 4, 6)
SEED = 20261125


def _command(script: Path, output_dir: Path, args: tuple[str, ...], kill_at: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if kill_at is not None:
        env[KILL_ENV] = kill_at
    return {"args": [sys.executable, str(script), str(output_dir), *args], "env": env, "cwd": output_dir.parent}


def run(script: Path, output_dir: Path, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    """Runs a script; with `kill_at`, asserts that it was killed by SIGKILL, otherwise that it succeeded."""
    result = subprocess.run(**_command(script, output_dir, args, kill_at), capture_output=True, text=True, timeout=300)
    if kill_at is None:
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        assert result.returncode == -signal.SIGKILL, (
            f"the run was not killed at {kill_at} (exit code {result.returncode}): {result.stderr[-3000:]}"
        )
    return result


class BackgroundRun:
    """An uninterrupted run started in the background (the killed runs go on meanwhile, on the other core)."""

    def __init__(self, script: Path, output_dir: Path):
        self.output_dir = output_dir
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(output_dir.parent / f"{output_dir.name}.log", "w+")  # closed in `wait`
        self.process = subprocess.Popen(
            **_command(script, output_dir, (), None), stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait(self) -> Path:
        """The output directory, once the run has ended successfully."""
        if self.process.returncode is None:
            try:
                self.process.wait(timeout=300)
            finally:
                if self.process.returncode is None:
                    self.process.kill()
                    self.process.wait()
                self.log.seek(0)
                self.output = self.log.read()
                self.log.close()
        assert self.process.returncode == 0, self.output[-3000:]
        return self.output_dir


def assert_same_parameters(a: Path, b: Path, atol: float = 1e-6) -> None:
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=atol, rtol=0, msg=name)


def last_complete_before(step: int, saves: tuple[int, ...]) -> str | None:
    """The checkpoint a run killed during step `step` (before its checkpoint is complete) must resume from."""
    done = [s for s in saves if s < step]
    return f"checkpoint-{max(done)}" if done else None


def draw_kill_points(pool: list[str], forced: list[list[str]], count: int, seed: int) -> list[str]:
    """`count` distinct kill points from `pool`, one from each group of `forced` first; reproducible with `seed`."""
    rng = random.Random(seed)
    points = [rng.choice(group) for group in forced]
    rest = [p for p in pool if p not in points]
    return points + rng.sample(rest, count - len(points))


# ------------------------------------------------------------------------------------------------------------------
# Pre-training
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretraining_baseline(tmp_path_factory):
    baseline = BackgroundRun(PRETRAINING, tmp_path_factory.mktemp("pretraining") / "full")
    yield baseline
    baseline.wait()


def pretraining_history(output_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in json.loads((output_dir / "result.json").read_text())["history"]}


def kill_then_resume_pretraining(output_dir: Path, point: str, resume: bool = False) -> None:
    """Runs (or resumes) until the kill point, then checks that the newest complete checkpoint is the expected one."""
    run(PRETRAINING, output_dir, *(["--resume"] if resume else []), kill_at=point)
    expected = last_complete_before(int(point.split(":")[1]), PRETRAINING_SAVES)
    found = latest_checkpoint(output_dir)
    assert (found.name if found else None) == expected
    assert not (output_dir / "final.safetensors").exists()


def check_pretraining_resume(output_dir: Path, baseline: BackgroundRun, expected_start: str | None) -> None:
    run(PRETRAINING, output_dir, "--resume")
    baseline = baseline.wait()
    assert json.loads((output_dir / "result.json").read_text())["resumed_from"] == expected_start
    assert_same_parameters(baseline / "final.safetensors", output_dir / "final.safetensors")
    history, reference = pretraining_history(output_dir), pretraining_history(baseline)
    assert list(history) == list(range(1, MAX_STEPS + 1))
    for step, loss in reference.items():
        assert history[step] == pytest.approx(loss, abs=1e-5), step


def test_pretraining_killed_during_refresh_then_during_checkpoint_write(pretraining_baseline, tmp_path):
    """Killed while re-embedding the corpus at step 4, resumed from checkpoint-3, killed again in the middle of
    writing checkpoint-6 (`optimizer.safetensors` half written), resumed from checkpoint-3 again: same end as no kill."""
    output_dir = tmp_path / "killed"
    kill_then_resume_pretraining(output_dir, "refresh:4")
    assert sorted(p.name for p in (output_dir / "indexes").iterdir()) == ["step-2"]  # step-4's index never swapped
    kill_then_resume_pretraining(output_dir, "checkpoint:6", resume=True)
    # The incomplete write is there, under its staging name.
    assert (output_dir / ".tmp-checkpoint-6" / "checkpoint-6").is_dir()
    check_pretraining_resume(output_dir, pretraining_baseline, "checkpoint-3")
    assert sorted(p.name for p in output_dir.iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-3",
        "checkpoint-6",
    ]


# The index in service is saved at step 0 and with each checkpoint (not at every refresh: the period can be one step).
PRETRAINING_POOL = (
    [f"step:{s}" for s in range(1, MAX_STEPS + 1)]
    + [f"refresh:{s}" for s in PRETRAINING_REFRESHES]
    + [f"index-save:{s}" for s in (0, *PRETRAINING_SAVES)]
    + [f"{stage}:{s}" for stage in ("checkpoint", "checkpoint-end") for s in PRETRAINING_SAVES]
)
PRETRAINING_FORCED = [
    [f"{stage}:{s}" for stage in ("checkpoint", "checkpoint-end") for s in PRETRAINING_SAVES],
    [f"refresh:{s}" for s in PRETRAINING_REFRESHES] + [f"index-save:{s}" for s in PRETRAINING_SAVES],
]
PRETRAINING_POINTS = draw_kill_points(PRETRAINING_POOL, PRETRAINING_FORCED, count=6, seed=SEED)


@pytest.mark.slow
@pytest.mark.parametrize("point", PRETRAINING_POINTS)
def test_pretraining_random_kill_points(pretraining_baseline, tmp_path, point):
    output_dir = tmp_path / "killed"
    kill_then_resume_pretraining(output_dir, point)
    check_pretraining_resume(
        output_dir, pretraining_baseline, last_complete_before(int(point.split(":")[1]), PRETRAINING_SAVES)
    )


# ------------------------------------------------------------------------------------------------------------------
# Fine-tuning (RealmForOpenQA + RealmTrainer)
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetuning_baseline(tmp_path_factory):
    baseline = BackgroundRun(FINETUNING, tmp_path_factory.mktemp("finetuning") / "full")
    yield baseline
    baseline.wait()


def check_finetuning_kill_and_resume(output_dir: Path, baseline: BackgroundRun, point: str) -> None:
    run(FINETUNING, output_dir, kill_at=point)
    expected = last_complete_before(int(point.split(":")[1]), FINETUNING_SAVES)
    last = get_last_checkpoint(str(output_dir))  # what `trainer.train(resume_from_checkpoint=True)` picks
    assert (Path(last).name if last else None) == expected
    run(FINETUNING, output_dir, "--resume")
    baseline = baseline.wait()
    result = json.loads((output_dir / "result.json").read_text())
    assert result["resumed_from"] == expected and result["global_step"] == MAX_STEPS
    assert_same_parameters(baseline / "final.safetensors", output_dir / "final.safetensors")
    reference = json.loads((baseline / "result.json").read_text())["losses"]
    assert [step for step, _ in result["losses"]] == list(range(1, MAX_STEPS + 1))
    for (_, loss), (_, expected_loss) in zip(result["losses"], reference):
        assert loss == pytest.approx(expected_loss, abs=1e-5)
    assert not list(output_dir.glob(".tmp-checkpoint-*"))  # the killed write's staging directory was cleaned


def test_finetuning_killed_during_checkpoint_write(finetuning_baseline, tmp_path):
    """Killed in the middle of writing checkpoint-4 (`optimizer.safetensors` half written): the half-written checkpoint is not
    visible as `checkpoint-4`, the run resumes from checkpoint-2 and ends as an uninterrupted one (dropout on)."""
    check_finetuning_kill_and_resume(tmp_path / "killed", finetuning_baseline, "checkpoint:4")


FINETUNING_POOL = [f"step:{s}" for s in range(1, MAX_STEPS + 1)] + [
    f"{stage}:{s}" for stage in ("checkpoint", "checkpoint-end") for s in FINETUNING_SAVES
]
FINETUNING_FORCED = [[f"{stage}:{s}" for stage in ("checkpoint", "checkpoint-end") for s in FINETUNING_SAVES]]
FINETUNING_POINTS = draw_kill_points(FINETUNING_POOL, FINETUNING_FORCED, count=6, seed=SEED)


@pytest.mark.slow
@pytest.mark.parametrize("point", FINETUNING_POINTS)
def test_finetuning_random_kill_points(finetuning_baseline, tmp_path, point):
    check_finetuning_kill_and_resume(tmp_path / "killed", finetuning_baseline, point)


def test_kill_points_are_seeded_and_cover_checkpoint_writes_and_refreshes():
    assert draw_kill_points(PRETRAINING_POOL, PRETRAINING_FORCED, 6, SEED) == PRETRAINING_POINTS
    assert draw_kill_points(FINETUNING_POOL, FINETUNING_FORCED, 6, SEED) == FINETUNING_POINTS
    for points, pool in ((PRETRAINING_POINTS, PRETRAINING_POOL), (FINETUNING_POINTS, FINETUNING_POOL)):
        assert len(set(points)) == len(points) >= 5 and set(points) <= set(pool)
        assert any(p.startswith("checkpoint") for p in points)
    assert any(p.startswith(("refresh", "index-save")) for p in PRETRAINING_POINTS)


def test_realm_trainer_publishes_a_checkpoint_only_when_complete(tmp_path):
    """In process: a save failing half-way leaves no `checkpoint-2` (only a hidden staging directory), the best
    checkpoint is recorded under its final name, and a resumed trainer goes on from checkpoint-1."""
    output_dir = tmp_path / "run"
    best_args = dict(eval_strategy="steps", eval_steps=1, load_best_model_at_end=True, label_names=["answer_ids"],
                     prediction_loss_only=True)  # fmt: skip
    trainer = build_trainer(output_dir, max_steps=2, save_steps=1, **best_args)
    save_optimizer = trainer._save_optimizer_and_scheduler

    def failing_save(checkpoint_dir):
        save_optimizer(checkpoint_dir)
        if trainer.state.global_step == 2:
            raise OSError("disk full (injected)")

    trainer._save_optimizer_and_scheduler = failing_save
    with pytest.raises(OSError, match="disk full"):
        trainer.train()
    assert sorted(p.name for p in output_dir.iterdir() if "checkpoint" in p.name) == [
        ".tmp-checkpoint-2",
        "checkpoint-1",
    ]
    assert get_last_checkpoint(str(output_dir)) == str(output_dir / "checkpoint-1")
    state = json.loads((output_dir / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(output_dir / "checkpoint-1")  # not the staging path

    resumed = build_trainer(output_dir, max_steps=2, save_steps=1, **best_args)
    assert resumed.train(resume_from_checkpoint=True).global_step == 2
    assert sorted(p.name for p in output_dir.iterdir() if "checkpoint" in p.name) == ["checkpoint-1", "checkpoint-2"]
