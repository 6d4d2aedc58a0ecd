"""Interrupted writes leave the previous version loadable: model cards (`save_model_card`, `save_realm`) and
knowledge indexes (`RealmIndex.save_pretrained`), interrupted by an injected error or by SIGKILL of a subprocess.

(An index save failing with an exception is covered by `tests/test_index.py::test_atomic_save_keeps_previous_version`.)
"""

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import ModelCard

import realm_hf.file_utils as file_utils
from realm_hf import RealmConfig, RealmEmbedder
from realm_hf.file_utils import atomic_open, atomic_write_text, replace_directory
from realm_hf.hub.model_card import RealmModelCardData, save_model_card
from realm_hf.hub.publish import save_realm
from realm_hf.retrieval.index import RealmIndex

from .scripts.interrupted_write import NEW_CARD, interrupting_open


SCRIPT = Path(__file__).resolve().parent / "scripts" / "interrupted_write.py"
REPO_ROOT = Path(__file__).resolve().parents[1]


def run_killed(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == -signal.SIGKILL, f"not killed (exit code {result.returncode}): {result.stderr[-3000:]}"


def old_card_data() -> RealmModelCardData:
    return RealmModelCardData(model_id="me/realm-old", license="apache-2.0", model_description="The previous card.")


# The injected failure recognises the card's temporary file by its name, read from /proc/self/fd.
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc/self/fd")


def assert_is_old_card(path: Path) -> None:
    card = ModelCard.load(path)
    assert card.data.library_name == "realm_hf" and card.data.license == "apache-2.0"
    assert "The previous card." in card.text and "Lorem ipsum" not in card.text


# ------------------------------------------------------------------------------------------------------------------
# Model cards
# ------------------------------------------------------------------------------------------------------------------


@linux_only
def test_card_write_failing_midway_keeps_previous_card(tmp_path, monkeypatch):
    readme = save_model_card(old_card_data(), tmp_path)
    assert readme == tmp_path / "README.md"
    before = readme.read_bytes()
    monkeypatch.setattr(io, "open", interrupting_open(io.open, "README.md", kill=False))
    with pytest.raises(OSError, match="No space left"):
        save_model_card(NEW_CARD, readme)
    monkeypatch.undo()
    assert readme.read_bytes() == before
    assert_is_old_card(readme)
    assert sorted(os.listdir(tmp_path)) == ["README.md"]  # the temporary file is gone
    save_model_card(NEW_CARD, readme)  # and the next write goes through
    assert ModelCard.load(readme).data.license == "mit"


@linux_only
def test_card_write_killed_midway_keeps_previous_card(tmp_path):
    readme = save_model_card(old_card_data(), tmp_path / "README.md")
    before = readme.read_bytes()
    run_killed("card", str(readme))
    assert readme.read_bytes() == before
    assert_is_old_card(readme)
    leftovers = [name for name in os.listdir(tmp_path) if name != "README.md"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".README.md.tmp-")  # the half-written text went there


@linux_only
def test_save_realm_card_write_failing_midway_keeps_previous_card(tiny_tokenizer, tmp_path, monkeypatch):
    model = RealmEmbedder(
        RealmConfig(vocab_size=len(tiny_tokenizer), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=8, retriever_proj_size=4)
    )  # fmt: skip
    save_realm(tmp_path, model, tiny_tokenizer, card=old_card_data())
    before = (tmp_path / "README.md").read_bytes()
    monkeypatch.setattr(io, "open", interrupting_open(io.open, "README.md", kill=False))
    with pytest.raises(OSError, match="No space left"):
        save_realm(tmp_path, model, tiny_tokenizer, card=NEW_CARD)
    monkeypatch.undo()
    assert (tmp_path / "README.md").read_bytes() == before
    assert_is_old_card(tmp_path / "README.md")
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".README.md")]


def test_save_model_card_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="must be a ModelCard"):
        save_model_card(42, tmp_path / "README.md")


def test_atomic_write_text_keeps_permissions(tmp_path):
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "one")
    assert path.read_text() == "one" and path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    path.chmod(0o640)
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and path.stat().st_mode & 0o777 == 0o640


def test_atomic_open_leaves_the_previous_file_when_the_block_raises(tmp_path):
    path = tmp_path / "chunk.npy"
    with atomic_open(path, "wb") as handle:
        np.save(handle, np.arange(3))
    with pytest.raises(RuntimeError), atomic_open(path, "wb") as handle:
        np.save(handle, np.arange(5))
        raise RuntimeError("killed while writing")
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk.npy"]  # no temporary file left
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(path, "a"):
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------------------------------
# Knowledge index
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def saved_index(tmp_path) -> tuple[Path, np.ndarray]:
    corpus = datasets.Dataset.from_dict(
        {"title": [f"t{i}" for i in range(40)], "text": [f"block {i}" for i in range(40)],
         "token_ids": [[i % 7, 3] for i in range(40)]}
    )  # fmt: skip
    embeddings = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    path = tmp_path / "index"
    RealmIndex.build(corpus, embeddings, show_progress=False).save_pretrained(path)
    return path, embeddings


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("embeddings", "old"),
        pytest.param("before-swap", "old", marks=pytest.mark.slow),
        pytest.param("after-swap", "new", marks=pytest.mark.slow),
    ],
)
def test_index_save_killed_leaves_a_complete_version(saved_index, stage, expected):
    """SIGKILL while `embeddings.npy` is half written, before the new directory replaces the old one, or right after
    the swap: the index directory always loads, with the old embeddings until the swap and the new ones after."""
    path, old_embeddings = saved_index
    run_killed("index", str(path), stage)
    loaded = RealmIndex.from_pretrained(path)
    wanted = old_embeddings if expected == "old" else -old_embeddings
    np.testing.assert_array_equal(np.asarray(loaded.embeddings), wanted)
    top1 = np.argmax(wanted[:3] @ wanted.T, axis=1)
    np.testing.assert_array_equal(loaded.search(wanted[:3], 1)[1][:, 0], top1)
    # A later save over the same directory works despite the killed one's leftovers.
    loaded.refresh(2 * wanted, show_progress=False).save_pretrained(path)
    np.testing.assert_array_equal(np.asarray(RealmIndex.from_pretrained(path).embeddings), 2 * wanted)


def test_replace_directory_swaps_in_one_step(tmp_path, monkeypatch):
    """On Linux the old and new directories are exchanged by one rename: there is no moment without `target`."""
    old, new = tmp_path / "target", tmp_path / "new"
    old.mkdir(), new.mkdir()
    (old / "version").write_text("old"), (new / "version").write_text("new")
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is Linux-only")

    def no_rename_aside(*args):
        raise AssertionError("the target was renamed aside")

    monkeypatch.setattr(file_utils.os, "replace", no_rename_aside)
    replace_directory(new, old)
    assert (old / "version").read_text() == "new" and not new.exists()


def test_replace_directory_fallback_restores_the_old_version(tmp_path, monkeypatch):
    old, new = tmp_path / "target", tmp_path / "new"
    old.mkdir(), new.mkdir()
    (old / "version").write_text("old"), (new / "version").write_text("new")
    monkeypatch.setattr(file_utils, "_exchange", lambda first, second: False)
    real_replace, calls = os.replace, []

    def failing_second_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("injected")
        real_replace(src, dst)

    monkeypatch.setattr(file_utils.os, "replace", failing_second_replace)
    with pytest.raises(OSError, match="injected"):
        replace_directory(new, old)
    assert (old / "version").read_text() == "old" and (new / "version").read_text() == "new"
