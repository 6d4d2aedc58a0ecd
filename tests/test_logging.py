"""realm_hf.logging: the verbosity of realm_hf's loggers, set from Python or the environment."""

import logging
import os
import subprocess
import sys

import realm_hf
from realm_hf.logging import get_logger

from .utils import REPO_ROOT


def test_set_verbosity_reaches_every_realm_hf_logger():
    logger = get_logger("realm_hf.retrieval.index")
    assert logger.name == "realm_hf.retrieval.index" and not logger.isEnabledFor(logging.INFO)  # the default
    try:
        realm_hf.logging.set_verbosity_info()
        assert logger.isEnabledFor(logging.INFO) and realm_hf.logging.get_verbosity() == logging.INFO
        realm_hf.logging.set_verbosity_error()
        assert not logger.isEnabledFor(logging.WARNING)
    finally:
        realm_hf.logging.set_verbosity(logging.NOTSET)


def test_verbosity_from_the_environment_prints_info_messages():
    script = "import realm_hf; realm_hf.logging.get_logger('realm_hf.test').info('hello from realm_hf')"
    for variable in ("REALM_HF_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        env = {k: v for k, v in os.environ.items() if not k.endswith("_VERBOSITY")} | {variable: "info"}
        result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 0 and "hello from realm_hf" in result.stderr, result.stderr[-2000:]
    quiet = {k: v for k, v in os.environ.items() if not k.endswith("_VERBOSITY")}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=quiet, capture_output=True, text=True)
    assert "hello from realm_hf" not in result.stderr
