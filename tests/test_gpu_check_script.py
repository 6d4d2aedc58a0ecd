"""`benchmarks/gpu_check.sh --smoke` runs on a machine without a GPU, so no device time is spent on a broken script."""

import json
import os
import subprocess
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_run_passes_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "passed" in (tmp_path / "gpu_tests.log").read_text()
    assert "skipped" not in (tmp_path / "gpu_tests.log").read_text()  # the dry run runs every test, on the CPU
    assert json.loads((tmp_path / "environment.json").read_text())["torch"]
    assert (tmp_path / "gpu_tests.xml").is_file()
