"""Training checkpoints hold safetensors and JSON only; resume refuses a pickle and runs none of its code."""

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from realm_hf.training.checkpointing import (
    UnsafeCheckpointError,
    get_rng_state,
    load_checkpoint,
    load_state,
    save_checkpoint,
    save_state,
    set_rng_state,
)
from realm_hf.training.collators import DataCollatorForRealmPreTraining

from .utils import PICKLE_ENDINGS, RunsCode


REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "tests" / "scripts" / "tiny_pretraining.py"


def _run(output_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, str(SCRIPT), str(output_dir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=output_dir.parent)


def test_state_round_trip_keeps_values_and_types(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    state = {
        "optimizer": optimizer.state_dict(),  # int keys, tuples, tensors, floats
        "python": random.Random(5).getstate(),
        "numpy": np.random.RandomState(5).get_state(),
        "nothing": None,
        "nan": float("nan"),
    }
    save_state(state, tmp_path, "everything")
    assert {p.name for p in tmp_path.iterdir()} == {"everything.json", "everything.safetensors"}
    loaded = load_state(tmp_path, "everything")

    assert loaded["python"] == state["python"]  # random.setstate needs the exact tuples
    random.Random().setstate(loaded["python"])
    assert loaded["numpy"][0] == "MT19937" and loaded["numpy"][1].dtype == np.uint32
    np.testing.assert_array_equal(loaded["numpy"][1], state["numpy"][1])
    assert loaded["numpy"][2:] == state["numpy"][2:]
    assert loaded["nothing"] is None and np.isnan(loaded["nan"])
    saved_opt, loaded_opt = state["optimizer"], loaded["optimizer"]
    assert loaded_opt["param_groups"] == saved_opt["param_groups"]
    assert loaded_opt["state"].keys() == saved_opt["state"].keys()
    for key, values in saved_opt["state"].items():
        for name, value in values.items():
            torch.testing.assert_close(loaded_opt["state"][key][name], value, rtol=0, atol=0)
    optimizer.load_state_dict(loaded_opt)


def test_state_that_needs_pickle_is_refused(tmp_path):
    with pytest.raises(TypeError, match="without pickle") as info:
        save_state({"schedule": {"fn": lambda step: 1.0}}, tmp_path, "scheduler")
    assert "scheduler.schedule.fn" in str(info.value)


def test_rng_state_round_trip():
    state = get_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_collator_state_round_trip(tmp_path, tiny_tokenizer):
    collator = DataCollatorForRealmPreTraining(tiny_tokenizer, masking="random_token", seed=3)
    save_state(collator.state_dict(), tmp_path, "collator")
    resumed = DataCollatorForRealmPreTraining(tiny_tokenizer, masking="random_token", seed=99)
    resumed.load_state_dict(load_state(tmp_path, "collator"))
    assert resumed._generators.random.random() == collator._generators.random.random()
    assert torch.equal(
        torch.rand(4, generator=resumed._generators.torch), torch.rand(4, generator=collator._generators.torch)
    )


def test_in_process_checkpoint_resumes_exactly(tmp_path):
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
        return model, optimizer, scheduler

    def train(model, optimizer, scheduler, steps):
        for _ in range(steps):
            model(torch.randn(4, 3)).pow(2).mean().backward()  # dropout and data draw from the global generator
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()

    model, optimizer, scheduler = make()
    train(model, optimizer, scheduler, 3)
    save_checkpoint(tmp_path, 3, None, model, optimizer, {"scheduler": scheduler}, {"note": "x"})
    train(model, optimizer, scheduler, 3)

    resumed = make()
    torch.manual_seed(123)  # another generator state: the checkpoint must restore the saved one
    state = load_checkpoint(tmp_path / "checkpoint-3", None, resumed[0], resumed[1], {"scheduler": resumed[2]})
    assert state == {"note": "x", "step": 3}
    train(*resumed, 3)
    for a, b in zip(model.parameters(), resumed[0].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pretraining_checkpoint_holds_no_pickle_and_resume_refuses_a_planted_one(tmp_path):
    result = _run(tmp_path / "run", "--max-steps", "3", "--save-steps", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoint-3"
    files = {p.name for p in checkpoint.iterdir()}
    assert {"model.safetensors", "optimizer.json", "optimizer.safetensors", "scheduler.json", "collator.json"} <= files
    assert "rng_state_0.json" in files and "trainer_state.json" in files
    assert not [p for p in checkpoint.rglob("*") if p.suffix in PICKLE_ENDINGS]

    # What Accelerate's `load_state` would unpickle with weights_only=False; the payload is live: unpickling a copy
    # of it runs its code.
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(RunsCode(str(marker)))
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(payload)

    result = _run(tmp_path / "run", "--max-steps", "4", "--save-steps", "3", "--resume")
    assert result.returncode != 0
    assert "custom_checkpoint_0.pkl" in result.stderr and "pickle" in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoint-4").exists()


def test_load_checkpoint_refuses_any_pickle_before_reading(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint = save_checkpoint(tmp_path, 1, None, model, optimizer)
    marker = tmp_path / "code-ran"
    torch.save({"x": RunsCode(str(marker))}, checkpoint / "random_states_0.pkl")
    with pytest.raises(UnsafeCheckpointError, match="random_states_0.pkl"):
        load_checkpoint(checkpoint, None, model, optimizer)
    assert not marker.exists()
