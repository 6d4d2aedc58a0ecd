"""The README's first snippet runs as written, on a tiny checkpoint of the original port standing in for the Hub repo."""

import re
import subprocess
import sys

from .utils import REFERENCE, REPO_ROOT


HUB_ID = "google/realm-orqa-nq-openqa"


def test_the_first_snippet_answers_with_evidence(tmp_path):
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert HUB_ID in snippet and "load_realm" in snippet
    # The tiny legacy RealmForOpenQA (pytorch_model.bin with block_emb, a pickled block_records.npy, vocab.txt) is a
    # google/realm-* checkpoint in miniature; a local path takes the repo id's place.
    script = snippet.replace(f'"{HUB_ID}"', repr(str(REFERENCE / "openqa" / "legacy_bin")))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer, title, evidence = result.stdout.strip().split(" | ")
    assert evidence and answer in evidence  # the answer is a span of the evidence block it names
