"""`load_index`: the one loader, which dispatches on what a directory holds."""

import numpy as np
import pytest

from realm_hf import RealmIndex, ShardedRealmIndex
from realm_hf.retrieval.loading import find_index_directory, load_index

from .utils import make_corpus


@pytest.fixture
def index(tiny_tokenizer) -> RealmIndex:
    embeddings = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    return RealmIndex.build(make_corpus(["a", "b", "c", "d", "e"], tiny_tokenizer), embeddings, show_progress=False)


def test_load_index_dispatches_on_what_is_on_disk(index, tmp_path):
    index.save_pretrained(tmp_path / "plain")
    (tmp_path / "model").mkdir()
    index.save_pretrained(tmp_path / "model" / "index")  # a saved model's layout
    ShardedRealmIndex.from_index(index).save_pretrained(tmp_path / "sharded")  # one process: one shard
    for name in ("plain", "model", "sharded"):
        loaded = load_index(tmp_path / name)
        assert type(loaded) is RealmIndex, name
        np.testing.assert_array_equal(np.asarray(loaded.embeddings), np.asarray(index.embeddings))
        assert loaded.corpus["token_ids"] == index.corpus["token_ids"]
    assert find_index_directory(tmp_path / "model") == tmp_path / "model" / "index"
    assert isinstance(load_index(tmp_path / "sharded", sharded=True), ShardedRealmIndex)
    assert isinstance(load_index(tmp_path / "plain", sharded=True), ShardedRealmIndex)


def test_load_index_names_what_it_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    assert find_index_directory(tmp_path / "empty") is None
    with pytest.raises(ValueError, match="holds no saved index: no index_config.json or sharded_index.json"):
        load_index(tmp_path / "empty")
