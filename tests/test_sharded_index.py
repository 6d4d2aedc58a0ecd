"""The index sharded over torch.distributed (`ShardedRealmIndex`): 2 gloo processes against the single index."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from realm_hf import RealmConfig, RealmEmbedder, RealmIndex, ShardedRealmIndex, embed_corpus
from realm_hf.demo.job import build_tokenizer
from realm_hf.demo.synthetic import make_synthetic_knowledge
from realm_hf.retrieval.corpus import tokenize_blocks
from realm_hf.retrieval.sharded import SHARDED_INDEX_MANIFEST, shard_range

from .utils import REFERENCE, assert_same_parameters, openqa_retriever, run_script


REPO_ROOT = Path(__file__).resolve().parents[1]
CHECK = REPO_ROOT / "tests" / "scripts" / "sharded_index_check.py"


@pytest.fixture
def saved_index(tmp_path) -> Path:
    """A tiny world's corpus embedded by a random embedder: tokenizer/, embedder/, a plain index/ and the same index
    saved as a sharded one by one process (one-shard/)."""
    knowledge = make_synthetic_knowledge(num_people=6, num_cities=3, seed=3)
    tokenizer = build_tokenizer(knowledge.vocabulary(), tmp_path / "tokenizer")
    config = RealmConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, retriever_proj_size=16, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    embedder = RealmEmbedder(config).eval()
    embedder.save_pretrained(tmp_path / "embedder")
    corpus = tokenize_blocks(knowledge.documents, tokenizer)
    index = RealmIndex.build(
        corpus, embed_corpus(embedder, corpus, tokenizer, show_progress=False), show_progress=False
    )
    index.save_pretrained(tmp_path / "index")
    ShardedRealmIndex.from_index(index).save_pretrained(tmp_path / "one-shard")
    return tmp_path


def test_shard_ranges_cover_every_block_once():
    for num_blocks in (0, 1, 5, 17):
        for world_size in (1, 2, 3, 8):
            ranges = [shard_range(num_blocks, r, world_size) for r in range(world_size)]
            assert ranges[0][0] == 0 and ranges[-1][1] == num_blocks
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            assert max(e - s for s, e in ranges) - min(e - s for s, e in ranges) <= 1


def test_one_process_sharded_index_is_the_index(saved_index):
    """Without a process group it is one shard holding everything: same search, same embeddings; its save (a
    manifest and one shard) loads as a plain index."""
    single = RealmIndex.from_pretrained(saved_index / "index")
    sharded = ShardedRealmIndex.from_index(single)
    queries = np.random.default_rng(0).standard_normal((4, single.embedding_dim)).astype(np.float32)
    for got, expected in zip(sharded.search(queries, 3), single.search(queries, 3)):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(sharded.get_embeddings([[0, 2]]), single.get_embeddings([[0, 2]]))
    assert (saved_index / "one-shard" / SHARDED_INDEX_MANIFEST).is_file()
    plain = RealmIndex.from_pretrained(saved_index / "one-shard")
    np.testing.assert_array_equal(np.asarray(plain.embeddings), np.asarray(single.embeddings))
    with pytest.raises(ValueError, match=r"`k` must be an int in \[1,"):
        sharded.search(queries, len(single) + 1)
    with pytest.raises(IndexError, match="Block ids"):
        sharded.get_embeddings([len(single)])


def test_saving_over_a_directory_that_is_not_an_index_is_refused(saved_index):
    other = saved_index / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a saved index"):
        ShardedRealmIndex.from_index(RealmIndex.from_pretrained(saved_index / "index")).save_pretrained(other)
    assert (other / "keep.txt").read_text() == "mine"


@pytest.mark.distributed
def test_two_processes_search_refresh_save_and_load_as_the_single_index(saved_index):
    out = saved_index / "check"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(CHECK), str(out),
               str(saved_index / "index"), str(saved_index / "one-shard")]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]
    num_blocks = ranks[0]["num_blocks"]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["shard"] for r in ranks] == [[0, num_blocks // 2], [num_blocks // 2, num_blocks]]
    for rank in ranks:
        for k in (1, 5, num_blocks):  # exact search: the single index's ids, in its order, and its scores
            assert rank[f"k={k}"]["ids"] == rank[f"k={k}"]["expected_ids"]
            assert rank[f"k={k}"]["max_score_diff"] <= 1e-5
        assert rank["get_embeddings_equal"]
        assert rank["refresh_max_diff"] <= 1e-5  # each process embedded only its own half
        assert rank["refresh_embedded_rows"] == rank["shard"][1] - rank["shard"][0]
        assert rank["reload_same_ids"] and rank["reshard_same_ids"]
        assert rank["reshard"] == rank["shard"]
    assert ranks[0]["empty_query_shapes"] == [2, 3] and ranks[1]["empty_query_shapes"] == [0, 3]
    # Saved by 2 processes, loaded by 1: as a plain index, and as a sharded index of one shard.
    manifest = json.loads((out / "two-shards" / SHARDED_INDEX_MANIFEST).read_text())
    assert [s["directory"] for s in manifest["shards"]] == ["shard-00000-of-00002", "shard-00001-of-00002"]
    plain = RealmIndex.from_pretrained(out / "two-shards")
    one = ShardedRealmIndex.from_pretrained(out / "two-shards")
    assert len(plain) == len(one) == num_blocks == len(one.shard)
    np.testing.assert_array_equal(np.asarray(plain.embeddings), one.get_embeddings(np.arange(num_blocks)))


@pytest.mark.distributed
def test_pretraining_on_a_sharded_index_matches_the_single_index(tmp_path):
    """2 processes, the same run with each process holding all of the index or half of it: the same parameters after
    2 steps with a refresh and a checkpoint in between (sharded refresh, sharded save); the final model's index is one
    plain index."""
    sgd = ["--optim", "sgd", "--learning-rate", "0.5", "--max-steps", "2", "--batch-size", "2", "--refresh-steps",
           "1", "--save-steps", "1"]  # fmt: skip
    run_script(tmp_path / "single", *sgd, torchrun=True)
    run_script(tmp_path / "sharded", *sgd, "--sharded-index", torchrun=True)
    assert json.loads((tmp_path / "sharded" / "result.json").read_text())["num_processes"] == 2
    assert_same_parameters(tmp_path / "single" / "final.safetensors", tmp_path / "sharded" / "final.safetensors", 1e-5)
    assert (tmp_path / "sharded" / "indexes" / "step-2" / SHARDED_INDEX_MANIFEST).is_file()
    single = RealmIndex.from_pretrained(tmp_path / "single" / "final" / "index")
    sharded = RealmIndex.from_pretrained(tmp_path / "sharded" / "final" / "index")
    np.testing.assert_allclose(np.asarray(sharded.embeddings), np.asarray(single.embeddings), atol=1e-5)


@pytest.mark.distributed
def test_open_qa_answers_from_a_sharded_index_equal_the_single_index(tmp_path, openqa_tokenizer, blocks):
    """Sharded serving: 2 processes, each holding half of the block embeddings, answer their own questions with
    `answer_questions`; answers, scores and evidence equal those of one process with the whole index."""
    from realm_hf import RealmForOpenQA, answer_questions, save_realm

    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    model = RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors", retriever=retriever).eval()
    save_realm(tmp_path / "model", model, openqa_tokenizer, retriever)
    questions = [q["question"] for q in json.loads((REFERENCE / "openqa" / "expected.json").read_text())["questions"]]
    questions = (questions * 2)[:4]
    expected = {a.question: a.to_dict() for a in answer_questions(model, openqa_tokenizer, questions, batch_size=2)}
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               str(REPO_ROOT / "tests" / "scripts" / "sharded_serving_check.py"), str(tmp_path / "model"),
               str(tmp_path), json.dumps(questions)]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"answers-{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["shard"][1] == ranks[1]["shard"][0] > 0
    for rank in ranks:
        for answer in rank["answers"]:
            want = expected[answer["question"]]
            assert (answer["answer"], answer["block_id"], answer["evidence"]) == (
                want["answer"], want["block_id"], want["evidence"],
            )  # fmt: skip
            assert answer["score"] == pytest.approx(want["score"], abs=1e-4)
