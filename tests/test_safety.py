"""Hostile and corrupt files are refused with an error naming the file and the problem; no code from them runs."""

import pytest
import torch

from realm_hf import RealmConfig, RealmEmbedder

from .utils import RunsCode


def _tiny_config():
    return RealmConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)


def test_pickle_that_needs_code_is_refused_and_nothing_runs(tmp_path):
    _tiny_config().save_pretrained(tmp_path)
    marker = tmp_path / "code-ran"
    torch.save({"realm.embeddings.word_embeddings.weight": RunsCode(str(marker))}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="holds more than tensors") as info:
        RealmEmbedder.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert not marker.exists()


def test_truncated_safetensors_is_refused(tmp_path):
    RealmEmbedder(_tiny_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt or truncated") as info:
        RealmEmbedder.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)
