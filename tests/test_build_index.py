"""`build_index`: the one way an index is built from a model: factory checked first, fingerprint always recorded."""

import numpy as np
import pytest

import realm_hf.retrieval.index
from realm_hf import RealmConfig, RealmEmbedder, build_index, embed_corpus
from realm_hf.retrieval.search import check_index_factory

from .utils import make_corpus


TEXTS = ["alan turing was a computer scientist", "ada lovelace was a poet", "paris is the capital of france"]


@pytest.fixture
def embedder(tiny_config):
    config = RealmConfig(**{**tiny_config.to_dict(), "retriever_proj_size": 8})
    return RealmEmbedder(config).eval()


def test_build_index_records_the_fingerprint_and_embeds_like_embed_corpus(embedder, tiny_tokenizer):
    corpus = make_corpus(TEXTS, tiny_tokenizer)
    index = build_index(corpus, embedder, tiny_tokenizer, show_progress=False)
    assert index.check_embedder(embedder)
    expected = embed_corpus(embedder, corpus, tiny_tokenizer, show_progress=False)
    np.testing.assert_array_equal(np.asarray(index.embeddings), expected)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("IVF4096,Flat", "4096 IVF lists but the corpus has only 3 blocks"),
        ("NoSuchIndex", "Invalid FAISS index_factory"),
    ],
)
def test_a_bad_factory_is_refused_before_anything_is_embedded(embedder, tiny_tokenizer, monkeypatch, factory, message):
    def embed(*args, **kwargs):
        raise AssertionError("the corpus was embedded before the factory string was checked")

    monkeypatch.setattr(realm_hf.retrieval.index, "embed_corpus", embed)
    with pytest.raises(ValueError, match=message):
        build_index(make_corpus(TEXTS, tiny_tokenizer), embedder, tiny_tokenizer, factory, show_progress=False)


def test_check_index_factory():
    check_index_factory("Flat", 8, 2)
    check_index_factory("HNSW32", 8, 2)
    check_index_factory("IVF2,Flat", 8, 100)
    check_index_factory("IVF4096,Flat", 8)  # the corpus size is not known yet: only the string is checked
    with pytest.raises(ValueError, match="IVF lists"):
        check_index_factory("IVF4096,Flat", 8, 100)
    with pytest.raises(ValueError, match="PQ3"):  # 8 dimensions do not split into 3 sub-quantizers
        check_index_factory("IVF2,PQ3", 8)
    with pytest.raises(ValueError, match="index_factory"):
        check_index_factory("", 8)
