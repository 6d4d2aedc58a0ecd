"""Tests for `realm_hf.retrieval.index.RealmIndex`: exact/approximate search, persistence, legacy import and staleness."""

import json
import logging
import os
import shutil
import string

import datasets
import numpy as np
import pytest
import torch
from transformers import BertTokenizerFast

import realm_hf.retrieval.index as index_module
import realm_hf.retrieval.search as search_module
from realm_hf.retrieval.fingerprint import compute_embedder_fingerprint
from realm_hf.retrieval.index import RealmIndex, RealmIndexConfig


DIM = 16


def _corpus(n: int) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "title": [f"title {i}" for i in range(n)],
            "text": [f"block {i}" for i in range(n)],
            "doc_id": np.arange(n) // 2,
            "token_ids": [[i % 7, 3] for i in range(n)],
        }
    )


def _random_data(n: int, num_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, DIM)).astype(np.float32),
        rng.standard_normal((num_queries, DIM)).astype(np.float32),
    )


def _clustered_data(n: int, num_queries: int, num_clusters: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_clusters, DIM)).astype(np.float32) * 2
    blocks = centers[rng.integers(0, num_clusters, n)] + rng.standard_normal((n, DIM)).astype(np.float32)
    queries = centers[rng.integers(0, num_clusters, num_queries)] + rng.standard_normal((num_queries, DIM))
    return blocks.astype(np.float32), queries.astype(np.float32)


def _torch_topk(blocks: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = torch.einsum("BD,QD->QB", torch.from_numpy(blocks), torch.from_numpy(queries))
    top = torch.topk(scores, k=k, dim=-1)
    return top.values.numpy(), top.indices.numpy()


def _recall(ids: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, reference)]))


@pytest.fixture(scope="module")
def flat_index() -> RealmIndex:
    blocks, _ = _random_data(300, 1)
    return RealmIndex.build(_corpus(300), blocks, show_progress=False)


@pytest.fixture(scope="module")
def ivf_index() -> RealmIndex:
    blocks, _ = _clustered_data(2000, 1)
    return RealmIndex.build(_corpus(2000), blocks, "IVF16,Flat", nprobe=4, show_progress=False)


# -- exact search ----------------------------------------------------------------------------------------------


def test_exact_search_matches_torch_topk(flat_index):
    _, queries = _random_data(300, 40, seed=1)
    ref_scores, ref_ids = _torch_topk(flat_index.embeddings, queries, k=5)
    # Well separated: the 5th and 6th best scores of every query differ by far more than rounding error.
    all_scores = np.sort(queries @ flat_index.embeddings.T, axis=1)[:, ::-1]
    assert np.min(np.diff(-all_scores[:, :6], axis=1)) > 1e-4
    for scores, ids in (flat_index.search(queries, 5), flat_index.search(queries, 5, exact=True)):
        assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (40, 5)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(scores, axis=1) <= 0)


def test_exact_search_chunked_merge(flat_index, monkeypatch):
    _, queries = _random_data(300, 7, seed=2)
    expected = _torch_topk(flat_index.embeddings, queries, 6)
    monkeypatch.setattr(search_module, "EXACT_SCORE_BUDGET", 7 * 13)  # 13-block chunks
    for scores, ids in (flat_index.search(queries, 6), flat_index.exact_search_torch(torch.from_numpy(queries), 6)):
        np.testing.assert_array_equal(ids, expected[1])
        np.testing.assert_allclose(scores, expected[0], rtol=1e-5, atol=1e-5)


def test_batched_search_and_torch_queries(flat_index):
    _, queries = _random_data(300, 23, seed=3)
    scores, ids = flat_index.search(queries, 4)
    scores_b, ids_b = flat_index.search(torch.from_numpy(queries).double(), 4, batch_size=5)
    assert ids_b.shape == scores_b.shape == (23, 4)
    np.testing.assert_array_equal(ids_b, ids)
    np.testing.assert_allclose(scores_b, scores, rtol=1e-6)


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        ("IVF16,Flat", {"nprobe": 4}),
        ("HNSW16", {"hnsw_ef_search": 64}),
        ("IVF16,PQ4", {"nprobe": 8, "refine_factor": 10, "train_size": 3000}),
    ],
)
def test_approximate_indexes_reach_high_recall(factory, kwargs):
    blocks, queries = _clustered_data(3000, 50)
    exact = RealmIndex.build(None, blocks, show_progress=False)
    approx = RealmIndex.build(None, blocks, factory, show_progress=False, **kwargs)
    assert not approx.is_exact and exact.is_exact
    _, exact_ids = exact.search(queries, 5)
    _, ids = approx.search(queries, 5)
    assert _recall(ids, exact_ids) >= 0.9
    assert approx.corpus.column_names == ["block_id"]


def test_default_search_parameters(ivf_index):
    blocks, _ = _clustered_data(2000, 1)
    index = RealmIndex.build(None, blocks, "IVF16,Flat", show_progress=False)
    assert index.config.nprobe == 4  # sqrt(nlist)
    hnsw = RealmIndex.build(None, blocks[:200], "HNSW8", show_progress=False)
    assert hnsw.config.hnsw_ef_search == 128 and hnsw.config.nprobe is None
    ivf_index.set_search_parameters(nprobe=16)
    _, ids = ivf_index.search(blocks[:10], 3)
    exact_ids = _torch_topk(ivf_index.embeddings, blocks[:10], 3)[1]
    np.testing.assert_array_equal(ids, exact_ids)  # nprobe == nlist is exhaustive
    ivf_index.set_search_parameters(nprobe=4)


# -- lookup ------------------------------------------------------------------------------------------------------


def test_get_embeddings_and_blocks(flat_index):
    ids = np.array([[3, 1, 4], [1, 5, 9]])
    emb = flat_index.get_embeddings(ids)
    assert emb.shape == (2, 3, DIM)
    np.testing.assert_array_equal(emb[1, 2], flat_index.embeddings[9])
    assert flat_index.get_embeddings(torch.tensor(7)).shape == (DIM,)
    blocks = flat_index.get_blocks(ids, columns=["text", "doc_id"])
    assert blocks == {
        "text": [["block 3", "block 1", "block 4"], ["block 1", "block 5", "block 9"]],
        "doc_id": [[1, 0, 2], [0, 2, 4]],
    }
    assert flat_index.get_blocks(2)["title"] == "title 2"
    assert flat_index.get_blocks([0, 1])["token_ids"] == [[0, 3], [1, 3]]
    with pytest.raises(ValueError, match=r"Block id 300 is out of range \[0, 300\)"):
        flat_index.get_blocks([0, 300])
    with pytest.raises(ValueError, match="out of range"):
        flat_index.get_embeddings([-1])


def test_properties(flat_index):
    assert len(flat_index) == 300
    assert flat_index.embedding_dim == DIM
    assert isinstance(flat_index.corpus, datasets.Dataset)
    assert flat_index.faiss_index is None
    assert flat_index.config.metric == "inner_product"
    assert "RealmIndex(num_blocks=300" in repr(flat_index)


# -- argument errors ---------------------------------------------------------------------------------------------


def test_search_argument_errors(flat_index):
    queries = np.zeros((2, DIM), dtype=np.float32)
    with pytest.raises(ValueError, match=r"k=301 is larger than the number of blocks in the index \(300\)"):
        flat_index.search(queries, 301)
    with pytest.raises(ValueError, match="k=301"):
        flat_index.search(queries, 301, exact=True)
    with pytest.raises(ValueError, match="k=0"):
        flat_index.search(queries, 0)
    with pytest.raises(ValueError, match="dim 8 but the index has dim 16"):
        flat_index.search(np.zeros((2, 8), dtype=np.float32), 1)
    with pytest.raises(ValueError, match="2-D"):
        flat_index.search(np.zeros(DIM, dtype=np.float32), 1)
    bad = queries.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        flat_index.search(bad, 1)
    bad[1, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        flat_index.search(bad, 1)


def test_build_errors():
    blocks, _ = _random_data(50, 1)
    bad = blocks.copy()
    bad[17, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values \\(first in row 17\\)"):
        RealmIndex.build(None, bad, show_progress=False)
    with pytest.raises(ValueError, match="corpus has 40 rows but `embeddings` has 50 rows"):
        RealmIndex.build(_corpus(40), blocks, show_progress=False)
    with pytest.raises(ValueError, match="Invalid FAISS index_factory"):
        RealmIndex.build(None, blocks, "NotAnIndex", show_progress=False)
    corpus = _corpus(50).add_column("embeddings", list(blocks))
    corpus.add_faiss_index("embeddings")
    with pytest.raises(ValueError, match="drop_index"):
        RealmIndex.build(corpus, blocks, show_progress=False)


# -- persistence -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(ivf_index, flat_index, tmp_path, mmap):
    _, queries = _clustered_data(10, 20, seed=5)
    for index in (ivf_index, flat_index):
        path = tmp_path / index.config.index_factory.replace(",", "_")
        index.save_pretrained(path)
        loaded = RealmIndex.from_pretrained(path, mmap=mmap)
        assert loaded.config.to_dict() == {**index.config.to_dict(), "file_sizes": loaded.config.file_sizes}
        for exact in (False, True):
            expected = index.search(queries, 5, exact=exact)
            scores, ids = loaded.search(queries, 5, exact=exact)
            np.testing.assert_array_equal(ids, expected[1])
            np.testing.assert_array_equal(scores, expected[0])
        ids = index.search(queries, 5)[1]
        assert loaded.get_blocks(ids) == index.get_blocks(ids)
        np.testing.assert_array_equal(loaded.get_embeddings(ids), index.get_embeddings(ids))
        if mmap:
            assert isinstance(loaded.embeddings, np.memmap)
    assert not (tmp_path / "Flat" / "index.faiss").exists()  # exact search reads embeddings.npy directly
    assert (tmp_path / "IVF16_Flat" / "index.faiss").is_file()


def test_saved_config_has_only_relative_names(flat_index, tmp_path):
    flat_index.save_pretrained(tmp_path / "index")
    config = json.loads((tmp_path / "index" / "index_config.json").read_text())
    assert config["corpus_dir"] == "corpus" and config["embeddings_file"] == "embeddings.npy"
    assert config["index_file"] is None
    assert str(tmp_path) not in json.dumps(config)
    assert not list((tmp_path / "index").rglob("*.pkl"))


def test_moved_directory_loads(ivf_index, tmp_path):
    ivf_index.save_pretrained(tmp_path / "a" / "index")
    shutil.move(tmp_path / "a", tmp_path / "b")
    loaded = RealmIndex.from_pretrained(tmp_path / "b" / "index")
    np.testing.assert_array_equal(
        loaded.search(ivf_index.embeddings[:5], 3)[1], ivf_index.search(ivf_index.embeddings[:5], 3)[1]
    )


def test_save_overwrites_previous_version(flat_index, ivf_index, tmp_path):
    path = tmp_path / "index"
    ivf_index.save_pretrained(path)
    flat_index.save_pretrained(path)
    assert len(RealmIndex.from_pretrained(path)) == 300
    assert sorted(os.listdir(tmp_path)) == ["index"]


def test_atomic_save_keeps_previous_version(flat_index, ivf_index, tmp_path, monkeypatch):
    path = tmp_path / "index"
    flat_index.save_pretrained(path)

    def failing_writer(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(index_module, "write_faiss_index", failing_writer)
    with pytest.raises(OSError, match="disk full"):
        ivf_index.save_pretrained(path)
    assert sorted(os.listdir(tmp_path)) == ["index"]  # no temporary directory left
    assert len(RealmIndex.from_pretrained(path)) == 300  # the previous version is intact
    with pytest.raises(OSError, match="disk full"):
        ivf_index.save_pretrained(tmp_path / "new")
    assert sorted(os.listdir(tmp_path)) == ["index"]


def test_save_refuses_to_replace_foreign_directory(flat_index, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ValueError, match="refusing to replace it"):
        flat_index.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == b"weights"


def _edit_config(path, **changes):
    config_file = path / "index_config.json"
    config = json.loads(config_file.read_text())
    config.update(changes)
    config_file.write_text(json.dumps(config))


def test_truncated_faiss_index_names_the_file(ivf_index, tmp_path):
    path = tmp_path / "index"
    ivf_index.save_pretrained(path)
    data = (path / "index.faiss").read_bytes()
    (path / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"index\.faiss has \d+ bytes but \d+ were written"):
        RealmIndex.from_pretrained(path)
    _edit_config(path, file_sizes={})  # without the size check, FAISS itself notices
    with pytest.raises(ValueError, match=r"Could not read the FAISS index .*index\.faiss"):
        RealmIndex.from_pretrained(path)


def test_truncated_embeddings_name_the_file(flat_index, tmp_path):
    path = tmp_path / "index"
    flat_index.save_pretrained(path)
    data = (path / "embeddings.npy").read_bytes()
    (path / "embeddings.npy").write_bytes(data[:1000])
    _edit_config(path, file_sizes={})
    with pytest.raises(ValueError, match=r"embeddings\.npy"):
        RealmIndex.from_pretrained(path)


def test_row_count_mismatch_names_the_file(flat_index, ivf_index, tmp_path):
    path = tmp_path / "flat"
    flat_index.save_pretrained(path)
    np.save(path / "embeddings.npy", flat_index.embeddings[:299])
    _edit_config(path, file_sizes={})
    with pytest.raises(ValueError, match=r"embeddings\.npy has shape \(299, 16\)"):
        RealmIndex.from_pretrained(path)

    path = tmp_path / "ivf"
    ivf_index.save_pretrained(path)
    shutil.rmtree(path / "corpus")
    _corpus(10).save_to_disk(str(path / "corpus"))
    with pytest.raises(ValueError, match=r"corpus has 10 rows"):
        RealmIndex.from_pretrained(path)

    path = tmp_path / "ivf2"
    ivf_index.save_pretrained(path)
    other = RealmIndex.build(None, ivf_index.embeddings[:100], "IVF4,Flat", show_progress=False)
    index_module.write_faiss_index(other.faiss_index, path / "index.faiss")
    _edit_config(path, file_sizes={})
    with pytest.raises(ValueError, match=r"index\.faiss holds 100 vectors but there are 2000 blocks"):
        RealmIndex.from_pretrained(path)


def test_missing_files_and_bad_paths(flat_index, tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        RealmIndex.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"index_config\.json not found"):
        RealmIndex.from_pretrained(tmp_path / "empty")
    path = tmp_path / "index"
    flat_index.save_pretrained(path)
    _edit_config(path, embeddings_file="../../etc/passwd", file_sizes={})
    with pytest.raises(ValueError, match="must be relative"):
        RealmIndex.from_pretrained(path)


def test_config_round_trip_and_unknown_keys(tmp_path, caplog):
    config = RealmIndexConfig(dim=4, num_blocks=10, index_factory="HNSW32", hnsw_ef_search=64)
    config.to_json_file(tmp_path / "c.json")
    assert RealmIndexConfig.from_json_file(tmp_path / "c.json") == config
    with caplog.at_level(logging.WARNING, logger="realm_hf.retrieval.index"):
        loaded = RealmIndexConfig.from_dict({**config.to_dict(), "future_key": 1})
    assert loaded == config and "future_key" in caplog.text
    with pytest.raises(ValueError, match="missing required key"):
        RealmIndexConfig.from_dict({"dim": 4})


# -- refresh and staleness -------------------------------------------------------------------------------------


def test_refresh_returns_new_index_over_same_corpus(ivf_index):
    new_embeddings = -ivf_index.embeddings
    refreshed = ivf_index.refresh(
        torch.from_numpy(new_embeddings), embedder_fingerprint="sha256:new", show_progress=False
    )
    assert refreshed is not ivf_index and refreshed.corpus is ivf_index.corpus
    assert refreshed.config.index_factory == "IVF16,Flat" and refreshed.config.nprobe == ivf_index.config.nprobe
    assert refreshed.config.embedder_fingerprint == "sha256:new"
    np.testing.assert_array_equal(refreshed.get_embeddings([0]), -ivf_index.get_embeddings([0]))
    query = ivf_index.embeddings[:3]
    _, ids = refreshed.search(-query, 1)
    np.testing.assert_array_equal(ids[:, 0], _torch_topk(new_embeddings, -query, 1)[1][:, 0])
    with pytest.raises(ValueError, match="10 rows but the corpus has 2000 blocks"):
        ivf_index.refresh(new_embeddings[:10])


def _tiny_embedder(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, DIM), torch.nn.LayerNorm(DIM))
    model.register_buffer("steps", torch.tensor(3))
    return model


def test_fingerprint_is_deterministic_and_sensitive():
    model = _tiny_embedder(0)
    fingerprint = compute_embedder_fingerprint(model)
    assert fingerprint.startswith("sha256:") and len(fingerprint) == 7 + 64
    assert compute_embedder_fingerprint(_tiny_embedder(0)) == fingerprint
    assert compute_embedder_fingerprint(model, chunk_numel=5) == fingerprint
    with torch.no_grad():
        model[0].weight[0, 0] += 1e-3
    assert compute_embedder_fingerprint(model) != fingerprint
    assert compute_embedder_fingerprint(_tiny_embedder(0).to(torch.bfloat16)) != fingerprint


def test_check_embedder(caplog):
    model = _tiny_embedder(0)
    blocks, _ = _random_data(20, 1)
    index = RealmIndex.build(
        None, blocks, embedder_fingerprint=compute_embedder_fingerprint(model), show_progress=False
    )
    assert index.check_embedder(model, dim=DIM)
    with caplog.at_level(logging.WARNING, logger="realm_hf.retrieval.index"):
        assert not index.check_embedder(_tiny_embedder(1))
    assert "Stale index" in caplog.text
    with pytest.raises(ValueError, match="32-dimensional embeddings but the index has dim 16"):
        index.check_embedder(model, dim=32)
    model.config = type("Config", (), {"retriever_proj_size": 8})()
    with pytest.raises(ValueError, match="8-dimensional"):
        index.check_embedder(model)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="realm_hf.retrieval.index"):
        assert not RealmIndex.build(None, blocks, show_progress=False).check_embedder("sha256:x")
    assert "no embedder fingerprint" in caplog.text


# -- legacy import -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alan", "turing", "london", *string.ascii_lowercase, "."]
    vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)


def _write_legacy(path, texts: list[bytes]) -> None:
    records = np.empty(len(texts), dtype=object)
    records[:] = texts
    np.save(path, records, allow_pickle=True)


def test_legacy_import_requires_opt_in(tmp_path, tokenizer):
    path = tmp_path / "block_records.npy"
    _write_legacy(path, [b"Alan Turing.", b"London."])
    block_emb = np.eye(2, DIM, dtype=np.float32)
    with pytest.raises(ValueError, match="pickle.*allow_pickle=True"):
        RealmIndex.from_legacy(path, block_emb, tokenizer)


def test_legacy_import(tmp_path, tokenizer):
    path = tmp_path / "block_records.npy"
    _write_legacy(path, [b"Alan Turing was in London.", "Café.".encode(), b"turing"])
    block_emb = torch.eye(3, DIM)
    index = RealmIndex.from_legacy(path, block_emb, tokenizer, allow_pickle=True, show_progress=False)
    assert len(index) == 3 and index.is_exact
    assert index.get_blocks(1) == {
        "title": "",
        "text": "Café.",
        "doc_id": 1,
        "token_ids": tokenizer("Café.", add_special_tokens=False)["input_ids"],
        "title_token_ids": [],
    }
    _, ids = index.search(torch.eye(3, DIM)[[2, 0]], 1)
    np.testing.assert_array_equal(ids[:, 0], [2, 0])
    index.save_pretrained(tmp_path / "converted")
    assert RealmIndex.from_pretrained(tmp_path / "converted").get_blocks(0)["text"] == "Alan Turing was in London."


def test_legacy_import_validation(tmp_path, tokenizer):
    path = tmp_path / "block_records.npy"
    _write_legacy(path, [b"a", b"b", b"\xff"])
    with pytest.raises(ValueError, match="holds 3 blocks but `block_emb` has 2 rows"):
        RealmIndex.from_legacy(path, np.zeros((2, DIM), np.float32), tokenizer, allow_pickle=True)
    with pytest.raises(ValueError, match="block 2 is not valid UTF-8"):
        RealmIndex.from_legacy(path, np.zeros((3, DIM), np.float32), tokenizer, allow_pickle=True)
    with pytest.raises(ValueError, match="is missing"):
        RealmIndex.from_legacy(tmp_path / "nope.npy", np.zeros((3, DIM), np.float32), tokenizer)


def test_an_index_from_a_rag_style_dataset_and_back(_tiny_tokenizer):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(40, 8)).astype(np.float32)
    titles, texts = [f"title {i}" for i in range(40)], [f"the text of block {i}" for i in range(40)]
    rag = datasets.Dataset.from_dict({"title": titles, "text": texts, "embeddings": list(embeddings)})
    index = RealmIndex.from_dataset(rag, _tiny_tokenizer, show_progress=False)
    reference = RealmIndex.build(rag.remove_columns("embeddings"), embeddings, show_progress=False)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_array_equal(index.search(queries, 4)[1], reference.search(queries, 4)[1])
    assert "token_ids" in index.corpus.column_names and "embeddings" not in index.corpus.column_names

    as_dataset = index.as_dataset()
    assert as_dataset.list_indexes() == ["embeddings"] and not index.corpus.list_indexes()
    scores, examples = as_dataset.get_nearest_examples("embeddings", queries[0], k=4)
    expected_scores, expected_ids = index.search(queries[:1], 4)
    assert examples["title"] == [titles[i] for i in expected_ids[0]]
    np.testing.assert_allclose(scores, expected_scores[0], rtol=1e-5)

    # A dataset with only an attached FAISS index (RAG's add_faiss_index), here an L2 one: its vectors are read back.
    attached = datasets.Dataset.from_dict({"title": titles, "text": texts})
    attached.add_faiss_index_from_external_arrays(embeddings, "embeddings")
    again = RealmIndex.from_dataset(attached, show_progress=False)
    np.testing.assert_array_equal(again.search(queries, 4)[1], reference.search(queries, 4)[1])
    with pytest.raises(ValueError, match="no 'vectors' column and no FAISS index"):
        RealmIndex.from_dataset(attached, embeddings_column="vectors")
