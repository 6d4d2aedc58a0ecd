"""`realm-hf` with one test-only change: after writing checkpoint N of REALM pre-training the process writes
OUTPUT_DIR/hanging and sleeps, so that a test can kill it there (no hook in the package).

Usage: REALM_TEST_HANG_AFTER_CHECKPOINT=N python cli_hang_after_checkpoint.py pretrain --corpus ... --output_dir OUT
"""

import os
import sys
import time
from pathlib import Path

import realm_hf.training.pretraining as pretraining
from realm_hf.cli import main


HANG_AT = int(os.environ["REALM_TEST_HANG_AFTER_CHECKPOINT"])
original_save_checkpoint = pretraining.save_checkpoint


def save_checkpoint(output_dir, step, *args, **kwargs):
    path = original_save_checkpoint(output_dir, step, *args, **kwargs)
    if step == HANG_AT:
        (Path(output_dir) / "hanging").write_text(str(step))
        time.sleep(600)
    return path


pretraining.save_checkpoint = save_checkpoint

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
