"""Publishing a REALM model, tokenizer, index and card to the local Hub server (`tests/hub_server.py`), and loading it.

The real `huggingface_hub` client talks HTTP to the server; nothing in the client is mocked. Loading is checked in a
fresh process (the environment variables of `hub_environment` are read when huggingface_hub is imported), online and
then from the cache with `HF_HUB_OFFLINE=1` after the server is stopped.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
from huggingface_hub.repocard_data import model_index_to_eval_results

from realm_hf import RealmConfig, RealmForOpenQA, answer_questions
from realm_hf.hub.model_card import RealmModelCardData, update_card_from_metrics
from realm_hf.hub.publish import _index_card, load_realm, publish_realm, push_index_to_hub
from realm_hf.retrieval.corpus import tokenize_blocks
from realm_hf.retrieval.index import RealmIndex
from realm_hf.retrieval.retriever import RealmRetriever

from .hub_server import HubServer, hub_environment
from .utils import predict, tiny_config_kwargs


REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "tester/tiny-realm-openqa"
BLOCKS = [
    ("paris", "paris is the capital city of france."),
    ("berlin", "berlin is the capital city of germany."),
    ("rome", "rome is the capital city of italy."),
    ("alan turing", "alan turing was a computer scientist and mathematician."),
    ("ada lovelace", "ada lovelace was a mathematician and poet in london."),
    ("london", "london is the capital city of england."),
]
QUESTIONS = ["what is the capital of france?", "who was a computer scientist?", "where was ada lovelace born?"]

_LOAD_SCRIPT = """
import json, sys
from tests.utils import predict
from realm_hf.hub.publish import load_realm

model, tokenizer, retriever = load_realm(sys.argv[1])
result = predict(model, tokenizer, json.loads(sys.argv[3]))
result["classes"] = [type(model).__name__, type(tokenizer).__name__, type(retriever).__name__]
result["index_is_memory_mapped"] = isinstance(retriever.index.embeddings, __import__("numpy").memmap)
with open(sys.argv[2], "w") as f:
    json.dump(result, f)
"""


@pytest.fixture(scope="module")
def tiny_realm(_tiny_tokenizer):
    """A tiny random RealmForOpenQA with a retriever over BLOCKS (random, well-separated block embeddings)."""
    tokenizer = _tiny_tokenizer
    torch.manual_seed(0)
    model = RealmForOpenQA(RealmConfig(**tiny_config_kwargs())).eval()
    titles, texts = zip(*BLOCKS)
    corpus = tokenize_blocks(datasets.Dataset.from_dict({"title": list(titles), "text": list(texts)}), tokenizer)
    embeddings = np.random.default_rng(0).normal(size=(len(BLOCKS), model.config.retriever_proj_size))
    index = RealmIndex.build(corpus, embeddings, show_progress=False, embedder_fingerprint="sha256:test")
    model.set_retriever(RealmRetriever(index, tokenizer))
    return model, tokenizer, model.retriever


@pytest.fixture(scope="module")
def expected(tiny_realm) -> dict:
    model, tokenizer, _ = tiny_realm
    return predict(model, tokenizer, QUESTIONS)


def _card_data() -> RealmModelCardData:
    card_data = RealmModelCardData(model_name="tiny-realm-openqa", license="apache-2.0", language="en")
    update_card_from_metrics(card_data, {"eval_exact_match": 33.33, "eval_f1": 41.5}, "tiny-questions", "test")
    return card_data


def _run_load_script(env: dict, out: Path, repo_id: str = REPO_ID) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, repo_id, str(out), json.dumps(QUESTIONS)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


def _assert_same_predictions(actual: dict, expected: dict) -> None:
    assert actual["answers"] == expected["answers"]
    assert actual["block_ids"] == expected["block_ids"]
    np.testing.assert_allclose(actual["logits"], expected["logits"], atol=1e-5, rtol=0)


def _subprocess_env(server: HubServer, hf_home: Path, offline: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(hub_environment(server, hf_home))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def test_retriever_from_pretrained_by_repo_id(hub_server, tiny_realm):
    model, tokenizer, retriever = tiny_realm
    publish_realm(model, tokenizer, retriever, repo_id=REPO_ID)
    loaded = RealmRetriever.from_pretrained(REPO_ID)
    assert list(loaded.index.corpus["text"]) == list(retriever.index.corpus["text"])
    np.testing.assert_array_equal(np.asarray(loaded.index.embeddings), np.asarray(retriever.index.embeddings))


def test_publish_then_load_in_fresh_process_and_offline(hub_server, tiny_realm, expected, tmp_path):
    model, tokenizer, retriever = tiny_realm
    commit = publish_realm(model, tokenizer, retriever, repo_id=REPO_ID, card=_card_data())

    files = hub_server.list_files(REPO_ID)
    assert commit.oid == hub_server.branch_head(REPO_ID)
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "index/index_config.json",
    } <= set(files)
    assert any(name.startswith("index/corpus/") and name.endswith(".arrow") for name in files)
    assert "index/embeddings.npy" in files and "index/index.faiss" not in files  # "Flat": no FAISS file
    # One commit for everything (plus the repo's initial commit).
    assert [c.title for c in HfApi().list_repo_commits(REPO_ID)] == [
        "Upload REALM model with realm_hf",
        "initial commit",
    ]
    # model.safetensors went through the LFS path: batch, PUT of its sha256 oid, verify, lfsFile in the commit.
    weights = files["model.safetensors"]
    assert weights.lfs
    assert hub_server.requests_matching(f"{REPO_ID}.git/info/lfs/objects/batch", method="POST")
    puts = hub_server.requests_matching(f"/_lfs/model/{REPO_ID}/{weights.sha256}", method="PUT")
    assert [r.status for r in puts] == [200]
    assert hub_server.requests_matching(f"/_lfs/model/{REPO_ID}/{weights.sha256}/verify", method="POST")
    assert any(r.lfs and r.status == 200 for r in hub_server.requests_matching(f"/api/models/{REPO_ID}/commit/main"))
    # The README metadata was validated by the server; the card is ours, not transformers'.
    assert hub_server.requests_matching("/api/validate-yaml")
    card = ModelCard.load(REPO_ID)
    assert card.data.library_name == "realm_hf" and "realm" in card.data.tags
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("exact_match", 33.33), ("f1", 41.5)]
    model_name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert model_name == "tiny-realm-openqa" and results[0].dataset_split == "test"
    card.validate()  # POST /api/validate-yaml on the local server

    # The index alone loads from the model repo.
    index = RealmIndex.from_pretrained(REPO_ID, repo_type="model", subfolder="index")
    assert len(index) == len(BLOCKS) and index.config.embedder_fingerprint == "sha256:test"
    np.testing.assert_array_equal(index.embeddings, retriever.index.embeddings)

    # A fresh process loads everything by repo id and gives the same answers.
    hf_home = tmp_path / "subprocess_hf_home"
    online = _run_load_script(_subprocess_env(hub_server, hf_home), tmp_path / "online.json")
    assert online["classes"] == ["RealmForOpenQA", type(tokenizer).__name__, "RealmRetriever"]
    assert online["index_is_memory_mapped"]
    _assert_same_predictions(online, expected)

    # With the server gone, HF_HUB_OFFLINE=1 loads from that process' cache.
    hub_server.stop()
    offline = _run_load_script(_subprocess_env(hub_server, hf_home, offline=True), tmp_path / "offline.json")
    _assert_same_predictions(offline, expected)


_HUB_ID_SCRIPT = """
import json, subprocess, sys
from transformers import pipeline
from realm_hf import RealmForOpenQA

repo_id, out, questions = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = RealmForOpenQA.from_pretrained(repo_id)
qa = pipeline("realm-open-qa", model=repo_id)
asked = subprocess.run([sys.executable, "-m", "realm_hf.cli", "ask", repo_id, *questions], capture_output=True,
                       text=True, check=True).stdout.splitlines()
with open(out, "w") as f:
    json.dump({"retriever": type(model.retriever).__name__, "blocks": len(model.retriever.index),
               "pipeline": [{k: a[k] for k in ("answer", "block_id", "evidence")} for a in qa(questions)],
               "ask": [json.loads(line) for line in asked]}, f)
"""


def test_model_push_to_hub_carries_its_index_and_a_hub_id_answers_everywhere(hub_server, tiny_realm, tmp_path):
    """`model.push_to_hub` of a model with a retriever publishes the index with the weights in one commit; in a fresh
    process, `RealmForOpenQA.from_pretrained(repo_id)` comes back with its retriever, `pipeline("realm-open-qa",
    model=repo_id)` answers with evidence, and `realm-hf ask repo_id` prints the same answers."""
    model, tokenizer, retriever = tiny_realm
    repo_id = "tester/pushed-with-index"
    model.push_to_hub(repo_id)
    files = set(hub_server.list_files(repo_id))
    assert {
        "model.safetensors",
        "config.json",
        "vocab.txt",
        "index/index_config.json",
        "index/embeddings.npy",
    } <= files
    assert len(HfApi().list_repo_commits(repo_id)) == 2  # the push, and the repo's initial commit

    result = subprocess.run(
        [sys.executable, "-c", _HUB_ID_SCRIPT, repo_id, str(tmp_path / "out.json"), json.dumps(QUESTIONS)],
        cwd=REPO_ROOT, env=_subprocess_env(hub_server, tmp_path / "hf_home"), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads((tmp_path / "out.json").read_text())
    assert loaded["retriever"] == "RealmRetriever" and loaded["blocks"] == len(BLOCKS)
    expected = [{"answer": a.answer, "block_id": a.block_id, "evidence": a.evidence}
                for a in answer_questions(model, tokenizer, QUESTIONS)]  # fmt: skip
    assert loaded["pipeline"] == expected
    assert [{k: a[k] for k in ("answer", "block_id", "evidence")} for a in loaded["ask"]] == expected
    assert all(a["evidence"] for a in expected)


def test_from_pretrained_attaches_the_saved_retriever_unless_told_not_to(tiny_realm, tmp_path):
    model, tokenizer, retriever = tiny_realm
    model.save_pretrained(tmp_path / "saved")  # weights, config, tokenizer files and index/
    loaded = RealmForOpenQA.from_pretrained(tmp_path / "saved")
    assert list(loaded.retriever.index.corpus["text"]) == list(retriever.index.corpus["text"])
    assert RealmForOpenQA.from_pretrained(tmp_path / "saved", load_retriever=False).retriever is None
    model.save_pretrained(tmp_path / "alone", save_retriever=False)
    assert not (tmp_path / "alone" / "index").exists()
    assert RealmForOpenQA.from_pretrained(tmp_path / "alone").retriever is None
    with model.retriever_not_saved():
        model.save_pretrained(tmp_path / "checkpoint")
    assert not (tmp_path / "checkpoint" / "index").exists()


def test_republishing_unchanged_model_creates_no_commit(hub_server, tiny_realm):
    model, tokenizer, retriever = tiny_realm
    first = publish_realm(model, tokenizer, retriever, repo_id=REPO_ID, card=_card_data())
    num_commits = len(hub_server.get_repo(REPO_ID).commits)
    hub_server.clear_log()

    second = publish_realm(model, tokenizer, retriever, repo_id=REPO_ID, card=_card_data())

    assert second.oid == first.oid == hub_server.branch_head(REPO_ID)
    assert len(hub_server.get_repo(REPO_ID).commits) == num_commits
    assert not hub_server.requests_matching("/commit/")
    assert not hub_server.requests_matching("/_lfs/", method="PUT")


def test_changed_card_and_stale_index_files(hub_server, tiny_realm):
    """A new version updates what changed and deletes layout files it no longer has (here `index/index.faiss`)."""
    model, tokenizer, retriever = tiny_realm
    hnsw = RealmIndex.build(
        retriever.index.corpus, retriever.index.embeddings, index_factory="HNSW8", show_progress=False
    )
    publish_realm(model, tokenizer, RealmRetriever(hnsw, tokenizer), repo_id=REPO_ID)
    HfApi().upload_file(path_or_fileobj=b"user notes", path_in_repo="notes.txt", repo_id=REPO_ID)
    assert "index/index.faiss" in hub_server.list_files(REPO_ID)

    commit = publish_realm(
        model, tokenizer, retriever, repo_id=REPO_ID, card="---\nlibrary_name: realm_hf\n---\n# v2\n"
    )

    files = hub_server.list_files(REPO_ID)
    assert commit.oid == hub_server.branch_head(REPO_ID)
    assert "index/index.faiss" not in files and "index/index_config.json" in files
    assert "notes.txt" in files  # files outside the layout are left alone
    assert hub_server.read_file(REPO_ID, "README.md") == b"---\nlibrary_name: realm_hf\n---\n# v2\n"


def test_branch_and_pull_request_leave_main_unchanged(hub_server, tiny_realm, tmp_path):
    model, tokenizer, retriever = tiny_realm
    main_head = publish_realm(model, tokenizer, retriever, repo_id=REPO_ID).oid

    on_branch = publish_realm(model, tokenizer, retriever, repo_id=REPO_ID, revision="v2", card="# On a branch\n")
    assert hub_server.branch_head(REPO_ID, "v2") == on_branch.oid != main_head
    assert hub_server.branch_head(REPO_ID) == main_head
    _, _, branch_retriever = load_realm(REPO_ID, revision="v2", cache_dir=tmp_path)
    assert len(branch_retriever.index) == len(BLOCKS)

    pr = publish_realm(model, tokenizer, retriever, repo_id=REPO_ID, create_pr=True, card="# In a PR\n")
    assert pr.pr_revision == "refs/pr/1" and pr.pr_url.endswith(f"{REPO_ID}/discussions/1")
    assert hub_server.branch_head(REPO_ID) == main_head
    readme = hf_hub_download(REPO_ID, "README.md", revision="refs/pr/1", cache_dir=tmp_path)
    assert Path(readme).read_text() == "# In a PR\n"
    assert hub_server.read_file(REPO_ID, "README.md").startswith(b"---\n")  # main keeps the generated card

    with pytest.raises(ValueError, match="create_pr"):
        publish_realm(model, tokenizer, retriever, repo_id=REPO_ID, create_pr=True, revision="v2")


def test_missing_or_invalid_token(hub_server, tiny_realm, monkeypatch):
    model, tokenizer, retriever = tiny_realm
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(LocalTokenNotFoundError, match="hf auth login"):
        publish_realm(model, tokenizer, retriever, repo_id=REPO_ID)
    with pytest.raises(LocalTokenNotFoundError, match="token="):
        push_index_to_hub(retriever.index, "tester/tiny-index")
    assert not hub_server.requests_matching("/api/repos/create")

    with pytest.raises(HfHubHTTPError, match="write access") as excinfo:
        publish_realm(model, tokenizer, retriever, repo_id=REPO_ID, token="hf_not_a_valid_token")
    assert excinfo.value.response.status_code == 401


@pytest.mark.parametrize("repo_id", ["tester/bad name", "a/b/c", "tester/x--y", ""])
def test_malformed_repo_id(hub_server, tiny_realm, repo_id):
    model, tokenizer, retriever = tiny_realm
    with pytest.raises(ValueError, match="Invalid Hub repo id") as excinfo:
        publish_realm(model, tokenizer, retriever, repo_id=repo_id)
    assert repr(repo_id) in str(excinfo.value)
    with pytest.raises(ValueError, match="neither a local directory nor a valid Hub repo id"):
        load_realm(repo_id or "tester/bad name")
    assert not hub_server.requests


def test_server_error_on_commit_then_retry(hub_server, tiny_realm, expected, tmp_path):
    model, tokenizer, retriever = tiny_realm
    HfApi().create_repo(REPO_ID)
    head = hub_server.branch_head(REPO_ID)
    hub_server.fail_next("/commit/", status=500, message="Injected commit failure")

    with pytest.raises(HfHubHTTPError, match="failed while uploading the files") as excinfo:
        publish_realm(model, tokenizer, retriever, repo_id=REPO_ID)
    assert excinfo.value.response.status_code == 500
    assert "call the function again to retry" in str(excinfo.value)
    assert hub_server.branch_head(REPO_ID) == head  # nothing committed

    commit = publish_realm(model, tokenizer, retriever, repo_id=REPO_ID)
    assert hub_server.branch_head(REPO_ID) == commit.oid != head
    # The LFS objects of the failed attempt were reused: every object was PUT once.
    puts = [r.path for r in hub_server.requests_matching("/_lfs/", method="PUT") if r.status == 200]
    assert len(puts) == len(set(puts))
    reloaded, reloaded_tokenizer, _ = load_realm(REPO_ID, cache_dir=tmp_path / "cache")
    _assert_same_predictions(predict(reloaded, reloaded_tokenizer, QUESTIONS), expected)


def test_push_index_to_hub_round_trip(hub_server, tiny_realm, tmp_path):
    _, _, retriever = tiny_realm
    index = retriever.index
    commit = push_index_to_hub(retriever, "tester/tiny-index", private=True)

    files = hub_server.list_files("tester/tiny-index", repo_type="dataset")
    assert commit.oid == hub_server.branch_head("tester/tiny-index", repo_type="dataset")
    assert {"README.md", "index_config.json", "embeddings.npy"} <= set(files) and files["embeddings.npy"].lfs
    assert HfApi().dataset_info("tester/tiny-index").private is True
    readme = hub_server.read_file("tester/tiny-index", "README.md", repo_type="dataset").decode()
    assert f"| Blocks | {len(BLOCKS)} |" in readme and 'RealmIndex.from_pretrained("tester/tiny-index")' in readme
    assert readme == _index_card(index, "tester/tiny-index")  # the packaged template, rendered
    assert "{{" not in readme and "{%" not in readme

    loaded = RealmIndex.from_pretrained("tester/tiny-index", cache_dir=tmp_path)
    assert loaded.config.num_blocks == len(BLOCKS) and loaded.corpus["text"] == index.corpus["text"]
    queries = np.asarray(index.embeddings[:2]) + 0.01
    for got, want in zip(loaded.search(queries, k=3), index.search(queries, k=3)):
        np.testing.assert_array_equal(got, want)
    again = push_index_to_hub(index, "tester/tiny-index")
    assert again.oid == commit.oid  # unchanged: no new commit


def test_index_and_retriever_push_to_hub_in_the_usual_form(hub_server, tiny_realm, tmp_path):
    """`RealmIndex.push_to_hub` (a dataset repository by default) and `RealmRetriever.push_to_hub` (a model
    repository: tokenizer files and index/) round-trip through `from_pretrained` by repo id."""
    _, tokenizer, retriever = tiny_realm
    retriever.index.push_to_hub("tester/index-alone")
    assert "embeddings.npy" in hub_server.list_files("tester/index-alone", repo_type="dataset")
    loaded = RealmIndex.from_pretrained("tester/index-alone", cache_dir=tmp_path)
    np.testing.assert_array_equal(np.asarray(loaded.embeddings), np.asarray(retriever.index.embeddings))

    retriever.push_to_hub("tester/retriever-alone")
    assert {"vocab.txt", "index/index_config.json"} <= set(hub_server.list_files("tester/retriever-alone"))
    again = RealmRetriever.from_pretrained("tester/retriever-alone", cache_dir=tmp_path)
    assert list(again.index.corpus["text"]) == list(retriever.index.corpus["text"])
    assert again.tokenizer.get_vocab() == tokenizer.get_vocab()
    with pytest.raises(ValueError, match="Invalid Hub repo id"):
        retriever.push_to_hub("a/b/c")


def test_legacy_block_emb_from_a_repo_id_downloads_only_the_weights(hub_server):
    """`load_legacy_block_emb("owner/name")` goes through the one local-or-Hub resolver and fetches the weights file
    alone (a legacy repository also holds the multi-gigabyte pickled `block_records.npy`)."""
    from realm_hf.retrieval.legacy import load_legacy_block_emb

    from .utils import REFERENCE

    legacy = REFERENCE / "openqa" / "legacy_bin"
    api = HfApi()
    api.create_repo("tester/legacy-openqa")
    api.upload_folder(folder_path=str(legacy), repo_id="tester/legacy-openqa")
    block_emb = load_legacy_block_emb("tester/legacy-openqa")
    torch.testing.assert_close(block_emb, load_legacy_block_emb(legacy))
    snapshots = list(Path(os.environ["HF_HOME"]).rglob("*legacy-openqa*/snapshots/*"))
    assert snapshots and {p.name for s in snapshots for p in s.iterdir()} == {"pytorch_model.bin"}
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        api.create_repo("tester/empty")
        load_legacy_block_emb("tester/empty")


def test_cli_ask_writes_an_output_file_at_a_chosen_depth_and_names_the_class_it_needs(tiny_realm, tmp_path, capsys):
    from realm_hf import RealmEmbedder
    from realm_hf.cli import main

    model, tokenizer, _ = tiny_realm
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "answers.jsonl"
    assert (
        main(["ask", str(tmp_path / "model"), *QUESTIONS, "--top_k", "2", "--output", str(out), "--no-progress"]) == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["question"] for row in rows] == QUESTIONS
    assert all(len(row["retrieved_block_ids"]) == 2 for row in rows)  # --top-k: blocks retrieved per question
    assert capsys.readouterr().out == ""

    RealmEmbedder(model.config).save_pretrained(tmp_path / "embedder")
    tokenizer.save_pretrained(tmp_path / "embedder")
    assert main(["ask", str(tmp_path / "embedder"), "a question?"]) == 2
    assert "holds a RealmEmbedder; answering needs a RealmForOpenQA" in capsys.readouterr().err
