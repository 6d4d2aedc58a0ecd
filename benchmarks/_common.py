"""Helpers shared by the benchmarks that compare realm_hf with the original transformers REALM side by side.

The original implementation (transformers <= 4.46, `transformers.models.deprecated.realm`) lives in its own
virtualenv, given by `--reference-python` or the `REALM_REFERENCE_PYTHON` environment variable. A benchmark script
runs itself as a worker subprocess in either environment (`run_worker`); the workers exchange weights and inputs
through files in a shared work directory and write one JSON result each. This module must import in both
environments, so it only needs the standard library and torch.

What lives here: the reference-environment argument, the worker subprocess, strict weight loading, the timing
harness (`Stopwatch` for one timed block, `best_of` for repeated calls, rounds in alternating order and their best
round), machine information, and sanitising absolute paths out of the JSON results. Every performance script times
with these, so that all of them measure wall clock the same way (`time.perf_counter`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
REFERENCE_PYTHON_ENV = "REALM_REFERENCE_PYTHON"


def add_reference_arguments(parser: argparse.ArgumentParser, threads_default: int | None = None) -> None:
    """Adds `--reference-python`, `--threads`, `--rounds`, `--workdir` and `--output` to a benchmark's parser."""
    parser.add_argument(
        "--reference-python",
        type=str,
        default=os.environ.get(REFERENCE_PYTHON_ENV),
        help=f"Python of an environment with transformers<=4.46 (or set {REFERENCE_PYTHON_ENV})",
    )
    parser.add_argument("--threads", type=int, default=threads_default, help="torch threads in every worker process")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (a fresh process per side each)")
    parser.add_argument("--workdir", type=str, default=None, help="kept if given; a temporary directory otherwise")
    parser.add_argument("--output", type=str, default=None, help="JSON results file")


def require_reference_python(args: argparse.Namespace) -> str:
    """The reference interpreter, or a `SystemExit` that says how to give it."""
    if not args.reference_python:
        raise SystemExit(
            "Give the Python of an environment with the original transformers REALM (transformers<=4.46), e.g. "
            f"--reference-python /path/to/realm-ref-venv/bin/python, or set {REFERENCE_PYTHON_ENV}."
        )
    if not Path(args.reference_python).exists():
        raise SystemExit(f"--reference-python {args.reference_python} does not exist.")
    return args.reference_python


def make_workdir(args: argparse.Namespace, prefix: str) -> tuple[Path, bool]:
    """`(workdir, is_temporary)`: `--workdir` when given (kept), else a new temporary directory (to remove)."""
    if args.workdir:
        path = Path(args.workdir)
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix=prefix)), True


NATIVE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run_worker(
    python: str,
    script: str | Path,
    worker_args: Sequence[str],
    result_path: Path,
    timeout: float | None = None,
    native_threads: int | None = None,
) -> dict[str, Any]:
    """Runs `python script *worker_args` (which writes `result_path`) and returns the JSON it wrote.

    Transformers' warnings are silenced in the worker; a failed worker raises `RuntimeError` with its output. With
    `native_threads`, the OpenMP / OpenBLAS / MKL thread pools of the worker (numpy's BLAS, FAISS) get that many
    threads too, not only torch's: on a small machine, idle BLAS threads that spin after a numpy matmul otherwise
    take cores from torch's threads.
    """
    command = [python, str(Path(script).resolve()), *worker_args]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    if native_threads:
        env.update({name: str(native_threads) for name in NATIVE_THREAD_VARIABLES})
    result_path = Path(result_path)
    if result_path.exists():
        result_path.unlink()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0 or not result_path.exists():
        raise RuntimeError(
            f"Worker {' '.join(worker_args[:4])} failed (exit {completed.returncode}):\n"
            f"{completed.stdout[-4000:]}\n{completed.stderr[-8000:]}"
        )
    return json.loads(result_path.read_text())


def set_threads(threads: int | None) -> int:
    """Sets the torch thread count when given; returns the count in use."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def peak_rss_gib() -> float:
    """Peak resident memory of this process, in GiB (Linux `ru_maxrss` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load_state_strict(module: Any, state: dict, ignore: Sequence[str] = ("position_ids",)) -> list[str]:
    """Loads `state` into `module`; fails on a missing weight (keys ending in `ignore` excepted); returns the
    unexpected keys."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith(tuple(ignore))]
    if missing:
        raise RuntimeError(f"The weights lack parameters of {type(module).__name__}: {missing[:5]}")
    return list(unexpected)


class Stopwatch:
    """Wall-clock time of a block: `with Stopwatch() as clock: ...`, then `clock.seconds`; `clock.elapsed` while it
    runs (or `Stopwatch.started()`). `Stopwatch(timings, "name_seconds")` also records the seconds as `timings["name_seconds"]`."""

    seconds: float | None = None

    def __init__(self, timings: dict[str, float] | None = None, key: str | None = None):
        if (timings is None) != (key is None):
            raise ValueError("Stopwatch records into `timings` under `key`: give both or neither.")
        self._timings, self._key = timings, key

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    @classmethod
    def started(cls) -> Stopwatch:
        """A running stopwatch, for a span that is not one block (read `elapsed`)."""
        return cls().__enter__()

    def __exit__(self, *exc_info) -> None:
        self.seconds = self.elapsed
        if self._timings is not None:
            self._timings[self._key] = self.seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start


def best_of(call: Callable[[], Any], repeats: int, warmup: int = 0) -> tuple[Any, float]:
    """Calls `call()` `warmup` times untimed, then `repeats` times timed; returns the last result and the fastest
    call's seconds."""
    for _ in range(warmup):
        call()
    best, result = float("inf"), None
    for _ in range(max(repeats, 1)):
        with Stopwatch() as clock:
            result = call()
        best = min(best, clock.seconds)
    return result, best


def alternating_rounds(
    rounds: int,
    sides: Sequence[str],
    run: Callable[[str, int], dict],
    report: Callable[[int, dict], None] | None = None,
) -> dict[str, list[dict]]:
    """Runs `run(side, round_index)` for every side in every round, reversing the order every other round.

    Returns `{side: [result of round 0, round 1, ...]}`; `report(round_index, {side: result})` is called after each
    round.
    """
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for round_index in range(rounds):
        order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
        for side in order:
            results[side].append(run(side, round_index))
        if report is not None:
            report(round_index, {side: results[side][-1] for side in sides})
    return results


def best_round(values_per_round: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Median of each round's values and the best (lowest) round: `{"round_medians", "best_round", "best"}`."""
    medians = [statistics.median(values) for values in values_per_round]
    best = min(range(len(medians)), key=medians.__getitem__)
    return {"round_medians": medians, "best_round": best, "best": medians[best]}


#: CPU flags that decide matrix-product speed (fp32 vectors, bf16 / int8 instructions).
_CPU_EXTENSIONS = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx_vnni"}


def machine_info() -> dict[str, Any]:
    """CPU model, count and vector extensions, torch's CPU capability, torch and Python versions, and the load
    average now. (Two "AMD EPYC" machines can differ several-fold in speed; the extensions tell them apart.)"""
    import torch

    model, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags")))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "cpu_extensions": sorted(flags & _CPU_EXTENSIONS),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


_ABSOLUTE_PATH = re.compile(r"(?<![\w.<>-])/(?:tmp|root|work|home|var|usr|opt)/[^\s'\",:;)\]}]*")


def sanitize_paths(obj: Any, replacements: dict[str, str] | None = None) -> Any:
    """Replaces absolute machine paths in every string of a JSON-like object.

    Given `replacements` (`{absolute prefix: placeholder}`) are applied first, longest prefix first; the repository
    root becomes `.`, this interpreter `python`; any other absolute path left under `/tmp`, `/root`, `/work`,
    `/home`, ... keeps only its last component (`<path>/name`).
    """
    pairs = dict(replacements or {})
    pairs.setdefault(sys.executable, "python")
    pairs.setdefault(str(REPO_ROOT), ".")
    ordered = sorted(((k, v) for k, v in pairs.items() if k), key=lambda kv: -len(kv[0]))

    def clean(text: str) -> str:
        for prefix, placeholder in ordered:
            text = text.replace(prefix, placeholder)
        return _ABSOLUTE_PATH.sub(lambda m: "<path>/" + Path(m.group(0)).name, text)

    if isinstance(obj, str):
        return clean(obj)
    if isinstance(obj, dict):
        return {sanitize_paths(k, pairs): sanitize_paths(v, pairs) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize_paths(v, pairs) for v in obj]
    return obj


def reference_replacements(reference_python: str | None, **named: str | Path | None) -> dict[str, str]:
    """Placeholders for the reference virtualenv (`<reference venv>`) and named directories (`<name>`)."""
    out: dict[str, str] = {}
    if reference_python:
        venv = Path(reference_python).parent.parent
        out[str(venv)] = "<reference venv>"
    for name, path in named.items():
        if path:
            out[str(Path(path).resolve())] = f"<{name}>"
            out[str(path)] = f"<{name}>"
    return out


def command_line() -> str:
    """The command that ran this script, relative to the repository (for the JSON results)."""
    return " ".join(["python", *sys.argv])


def write_results(path: str | Path | None, results: dict, replacements: dict[str, str] | None = None) -> dict:
    """Sanitises `results` and writes them as JSON to `path` (when given); returns the sanitised results."""
    clean = sanitize_paths(results, replacements)
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(clean, indent=2) + "\n")
        print(f"\nWrote {path}")
    return clean
