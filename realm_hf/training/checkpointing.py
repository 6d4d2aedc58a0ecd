"""Training checkpoints without pickle: the one checkpoint format of realm_hf's own training loops.

`checkpoint-<step>/` holds only safetensors and JSON:

- `model.safetensors`: the parameters of the unwrapped model (tied tensors stored once);
- `optimizer.json` + `optimizer.safetensors`: the optimizer's `state_dict()`, its tensors in the safetensors file and
  everything else (parameter groups, counters) in the JSON file;
- `<name>.json` (+ `<name>.safetensors` where it has tensors) for every other stateful object of the loop: the
  learning-rate schedule, the data collator's random generators, a mixed-precision gradient scaler;
- `rng_state_<process>.json` + `.safetensors`: the Python, NumPy and torch (CPU and CUDA) generators of each process;
- `trainer_state.json`: the loop's own state (step, history, ...), written last.

A checkpoint is written into a hidden staging directory (`.tmp-checkpoint-<step>/checkpoint-<step>`, [`staging_dir`])
and moved to `checkpoint-<step>` once every file of every process is written, so a run killed while saving leaves the
previous checkpoint as the newest complete one. realm_hf's loops ([`save_checkpoint`]) and `RealmTrainer` share that
layout.

Accelerate's `save_state` is not used: it pickles the random states and every registered custom object, and
`load_state` unpickles custom objects with `weights_only=False`, so resuming from a checkpoint someone else wrote
would run their code. [`load_checkpoint`] refuses a checkpoint that holds any pickle file, naming it, before it reads
anything.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from ..file_utils import atomic_write_text, replace_directory
from ..logging import get_logger
from ..run_layout import CHECKPOINT_PREFIX, numbered_dirs, step_dir


logger = get_logger(__name__)

#: Written last into a checkpoint: a checkpoint directory without it is not complete.
STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_NAME = "optimizer"
RNG_STATE_NAME = "rng_state"
_STAGING_PREFIX = ".tmp-"
#: File endings of Python pickles (and of `torch.save` archives, which are pickles): never read from a checkpoint.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds a file that only unpickling could read: resuming from it could run arbitrary code."""


# ---------------------------------------------------------------------------------------------------------------------
# Any state dict as JSON + safetensors
# ---------------------------------------------------------------------------------------------------------------------


def _encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """`value` as JSON, its tensors and arrays moved to `tensors` (under their path in the structure)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)) and path in tensors:
        raise ValueError(f"Two entries of a training state are both saved as `{path}`: their keys print the same.")
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().clone().contiguous()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        tensors[path] = torch.from_numpy(array.view(np.uint8).reshape(-1).copy())
        return {"__ndarray__": path, "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        items = [[_encode(k, tensors, f"{path}.key{i}"), _encode(v, tensors, f"{path}.{k}")]
                 for i, (k, v) in enumerate(value.items())]  # fmt: skip
        return {"__dict__": items}
    raise TypeError(
        f"Cannot save {type(value).__name__} at `{path}` of a training state without pickle: a state dict may hold "
        "tensors, NumPy arrays, numbers, strings, None, and lists, tuples and dicts of these."
    )


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        raw = tensors[value["__ndarray__"]].numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__dict__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__dict__"]}
    raise ValueError(f"Unknown entry in a saved training state: {value!r}.")


def save_state(state: Any, directory: str | os.PathLike, name: str) -> None:
    """Saves a state dict (of an optimizer, a schedule, a collator, ...) as `name.json`, with its tensors and arrays
    in `name.safetensors`; [`load_state`] gives back an equal state, types included (tuples, int keys, dtypes)."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors, name)
    if tensors:
        save_file(tensors, str(directory / f"{name}.safetensors"), metadata={"format": "pt"})
    atomic_write_text(directory / f"{name}.json", json.dumps(skeleton))


def load_state(directory: str | os.PathLike, name: str) -> Any:
    """The state saved by [`save_state`] as `name` in `directory`."""
    directory = Path(directory)
    skeleton = json.loads((directory / f"{name}.json").read_text())
    tensor_file = directory / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
    return _decode(skeleton, tensors)


# ---------------------------------------------------------------------------------------------------------------------
# Random generators
# ---------------------------------------------------------------------------------------------------------------------


def get_rng_state() -> dict[str, Any]:
    """The global Python, NumPy and torch (CPU, and every CUDA device) random generator states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores the generator states of [`get_rng_state`]."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint directories
# ---------------------------------------------------------------------------------------------------------------------


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    """`output_dir/checkpoint-<step>`."""
    return step_dir(output_dir, step, CHECKPOINT_PREFIX)


def checkpoint_steps(output_dir: str | os.PathLike, complete_only: bool = True) -> list[tuple[int, Path]]:
    """The `(step, path)` of the checkpoints in `output_dir`, oldest first; with `complete_only`, only those whose
    state file is written (incomplete writes keep a staging name and are never listed)."""
    complete = (lambda path: (path / STATE_FILE).is_file()) if complete_only else None
    return numbered_dirs(output_dir, CHECKPOINT_PREFIX, complete)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in `output_dir`, or `None`."""
    steps = checkpoint_steps(output_dir)
    return steps[-1][1] if steps else None


def resolve_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | bool | None) -> Path | None:
    """The checkpoint a `resume_from_checkpoint` setting names: `None`/`False`: none; `True` or `'latest'`: the newest
    complete one in `output_dir` (`None` if there is none yet, so that a first run and its restarts share a command);
    anything else: that directory, which must be a complete checkpoint."""
    if resume_from_checkpoint in (None, False, ""):
        return None
    if resume_from_checkpoint is True or resume_from_checkpoint == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from_checkpoint)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint={str(path)!r} is not a complete checkpoint (no {STATE_FILE})."
        )
    return path


def staging_dir(output_dir: str | os.PathLike, step: int) -> Path:
    """The hidden directory `checkpoint-<step>` is written under before it is published:
    `output_dir/.tmp-checkpoint-<step>/` (it holds `checkpoint-<step>`, the layout a `Trainer` writes when its output
    directory is pointed there)."""
    return Path(output_dir) / f"{_STAGING_PREFIX}{checkpoint_dir(output_dir, step).name}"


def start_staging(output_dir: str | os.PathLike, step: int) -> Path:
    """Removes what writes killed before publishing left behind, creates an empty [`staging_dir`] for `step` and
    returns the path the checkpoint is to be written to (main process only)."""
    output_dir = Path(output_dir)
    for stale in output_dir.glob(f"{_STAGING_PREFIX}{CHECKPOINT_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = staging_dir(output_dir, step)
    staging.mkdir(parents=True)
    return staging / checkpoint_dir(output_dir, step).name


def publish_staged(output_dir: str | os.PathLike, step: int) -> Path:
    """Moves the checkpoint written under [`staging_dir`] to `output_dir/checkpoint-<step>` (an existing checkpoint of
    that step stays whole until replaced) and removes the staging directory (main process only)."""
    final = checkpoint_dir(output_dir, step)
    staging = staging_dir(output_dir, step)
    replace_directory(staging / final.name, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def rotate_checkpoints(output_dir: str | os.PathLike, save_total_limit: int | None) -> list[Path]:
    """Deletes all but the newest `save_total_limit` checkpoints (none when it is `None` or < 1 keeps one); returns
    the kept ones, oldest first."""
    checkpoints = [path for _, path in checkpoint_steps(output_dir, complete_only=False)]
    if save_total_limit is None:
        return checkpoints
    keep = max(save_total_limit, 1)
    for path in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
    return checkpoints[-keep:]


def load_trainer_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The loop's state saved in a checkpoint's `trainer_state.json`."""
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def check_no_pickle(directory: str | os.PathLike) -> None:
    """Raises [`UnsafeCheckpointError`] naming the first pickle file in `directory` (recursively).

    realm_hf never writes one into a checkpoint, so such a file was put there by something else (an older format, a
    different tool, or someone who wants their code run on load): it is refused, not read.
    """
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
            raise UnsafeCheckpointError(
                f"Refusing to resume from {directory}: it holds {path.name}, a pickle file. realm_hf checkpoints are "
                "safetensors and JSON only, and unpickling a file can run arbitrary code. If this checkpoint was "
                "written by an older version or another tool, start the run again, or remove the file only if you "
                "know where it came from."
            )


def _unwrap(accelerator, model: torch.nn.Module) -> torch.nn.Module:
    return accelerator.unwrap_model(model) if accelerator is not None else model


def write_training_state(
    directory: Path,
    accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    stateful: dict[str, Any] | None = None,
) -> None:
    """Writes the model, optimizer, every object of `stateful` (name -> object with `state_dict`) and this process's
    random generators into `directory` (collective: call it on every process; the main process writes the shared
    files, every process its own generators)."""
    is_main = accelerator is None or accelerator.is_main_process
    process_index = 0 if accelerator is None else accelerator.process_index
    if is_main:
        save_model(_unwrap(accelerator, model), str(directory / MODEL_FILE), metadata={"format": "pt"})
        save_state(optimizer.state_dict(), directory, OPTIMIZER_NAME)
        for name, obj in (stateful or {}).items():
            save_state(obj.state_dict(), directory, name)
    save_state(get_rng_state(), directory, f"{RNG_STATE_NAME}_{process_index}")


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    stateful: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    r"""
    Writes `output_dir/checkpoint-<step>` atomically (collective: call it on every process).

    Every process writes under [`staging_dir`]; when all are done the main process writes `trainer_state.json` (the
    loop's `trainer_state` plus the Accelerator's micro-step counter) and moves the checkpoint to its final name
    ([`publish_staged`]), replacing an existing checkpoint of that step only once the new one is whole.

    Args:
        output_dir (`str` or `os.PathLike`): The run's output directory.
        step (`int`): The optimizer step.
        accelerator (`accelerate.Accelerator`, *optional*): Synchronises the processes; `None` for one process.
        model, optimizer: The (possibly wrapped) model and its optimizer.
        stateful (`dict[str, Any]`, *optional*): Other objects with `state_dict` / `load_state_dict`, by file name
            (for example `{"scheduler": scheduler, "collator": collator}`).
        trainer_state (`dict`, *optional*): JSON-serialisable state of the loop.

    Returns:
        `Path`: the checkpoint directory.
    """
    output_dir = Path(output_dir)
    is_main = accelerator is None or accelerator.is_main_process
    staged = staging_dir(output_dir, step) / checkpoint_dir(output_dir, step).name
    if is_main:
        start_staging(output_dir, step)
    _wait(accelerator)
    staged.mkdir(parents=True, exist_ok=True)
    write_training_state(staged, accelerator, model, optimizer, stateful)
    _wait(accelerator)
    if is_main:
        state = dict(trainer_state or {}, step=step)
        if accelerator is not None:
            state["accelerator_step"] = accelerator.step
        atomic_write_text(staged / STATE_FILE, json.dumps(state))
        publish_staged(output_dir, step)
    _wait(accelerator)
    return checkpoint_dir(output_dir, step)


def load_checkpoint(
    checkpoint: str | os.PathLike,
    accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    stateful: dict[str, Any] | None = None,
) -> dict[str, Any]:
    r"""
    Restores what [`save_checkpoint`] wrote into `model`, `optimizer`, the `stateful` objects and this process's
    random generators, and returns the loop's `trainer_state`. A checkpoint holding any pickle file is refused first
    ([`check_no_pickle`]), before anything is read.

    Raises:
        [`UnsafeCheckpointError`]: the checkpoint holds a pickle file.
        `FileNotFoundError`: the checkpoint is not complete.
    """
    checkpoint = Path(checkpoint)
    check_no_pickle(checkpoint)
    if not (checkpoint / STATE_FILE).is_file():
        raise FileNotFoundError(f"{checkpoint} is not a complete checkpoint (no {STATE_FILE}).")
    # Read on the CPU; `load_state_dict` copies each tensor to its parameter's device.
    load_model(_unwrap(accelerator, model), str(checkpoint / MODEL_FILE), device="cpu")
    optimizer.load_state_dict(load_state(checkpoint, OPTIMIZER_NAME))
    for name, obj in (stateful or {}).items():
        obj.load_state_dict(load_state(checkpoint, name))
    process_index = 0 if accelerator is None else accelerator.process_index
    rng_name = f"{RNG_STATE_NAME}_{process_index}"
    if (checkpoint / f"{rng_name}.json").is_file():
        set_rng_state(load_state(checkpoint, rng_name))
    else:
        logger.warning(f"{checkpoint} has no random state of process {process_index} (fewer processes wrote it).")
    state = load_trainer_state(checkpoint)
    if accelerator is not None and "accelerator_step" in state:
        accelerator.step = state["accelerator_step"]
    return state


def _wait(accelerator) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


__all__ = [
    "CHECKPOINT_PREFIX",
    "STATE_FILE",
    "UnsafeCheckpointError",
    "check_no_pickle",
    "checkpoint_dir",
    "checkpoint_steps",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "load_state",
    "load_trainer_state",
    "publish_staged",
    "resolve_checkpoint",
    "rotate_checkpoints",
    "save_checkpoint",
    "save_state",
    "set_rng_state",
    "staging_dir",
    "start_staging",
]
