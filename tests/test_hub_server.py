"""Publishing round trips against the local fake Hub (`tests/hub_server.py`) with the real `huggingface_hub` client.

Nothing in the client is mocked: every call below goes over HTTP to the server on 127.0.0.1.
"""

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

from .hub_server import HubServer, git_blob_oid


BIG_SIZE = 10 * 1024 * 1024 + 12_345  # just over the Hub's 10 MB LFS threshold


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A small text file, a file in a subfolder and a >10 MB binary file."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "config.json").write_text(json.dumps({"model_type": "realm_hf", "hidden_size": 32}))
    (folder / "docs").mkdir()
    (folder / "docs" / "notes.txt").write_text("retrieval-augmented\n")
    (folder / "block_emb.dat").write_bytes(os.urandom(BIG_SIZE))
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _lfs_puts(server: HubServer) -> list:
    return [r for r in server.requests_matching("/_lfs/", method="PUT") if r.status == 200]


def test_environment_is_patched(hub_server):
    assert constants.ENDPOINT == hub_server.url
    assert constants.HF_HUB_DISABLE_XET is True
    assert os.environ["HF_ENDPOINT"] == hub_server.url
    assert HfApi().endpoint == hub_server.url
    assert HfApi().whoami()["name"] == hub_server.user


def test_create_model_and_dataset_repos(hub_server):
    api = HfApi()
    url = api.create_repo("tester/tiny-realm")
    assert url.repo_id == "tester/tiny-realm" and url.repo_type == "model"
    assert url == f"{hub_server.url}/tester/tiny-realm"
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo("tester/tiny-realm")
    assert excinfo.value.response.status_code == 409
    assert api.create_repo("tester/tiny-realm", exist_ok=True).repo_id == "tester/tiny-realm"

    dataset_url = api.create_repo("tester/tiny-corpus", repo_type="dataset", private=True)
    assert dataset_url == f"{hub_server.url}/datasets/tester/tiny-corpus"
    info = api.dataset_info("tester/tiny-corpus")
    assert info.private is True
    assert info.sha == hub_server.branch_head("tester/tiny-corpus", repo_type="dataset")
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]

    api.upload_file(
        path_or_fileobj=b'{"title": "t", "text": "x"}\n',
        path_in_repo="passages.jsonl",
        repo_id="tester/tiny-corpus",
        repo_type="dataset",
    )
    path = hf_hub_download("tester/tiny-corpus", "passages.jsonl", repo_type="dataset")
    assert Path(path).read_bytes() == b'{"title": "t", "text": "x"}\n'
    # The private dataset is invisible without a token.
    with pytest.raises(HfHubHTTPError):
        HfApi(token=False).dataset_info("tester/tiny-corpus")


def test_upload_folder_lfs_download_and_snapshot(hub_server, model_folder, tmp_path):
    api = HfApi()
    repo_id = "tester/tiny-realm"
    api.create_repo(repo_id)
    commit = api.upload_folder(repo_id=repo_id, folder_path=model_folder, commit_message="Add model")
    assert commit.oid == hub_server.branch_head(repo_id)

    # The big file went through LFS (batch -> PUT -> verify), the small ones inside the NDJSON commit.
    stored = hub_server.list_files(repo_id)
    assert stored["block_emb.dat"].lfs and not stored["config.json"].lfs and not stored["docs/notes.txt"].lfs
    big_oid = stored["block_emb.dat"].sha256
    assert hub_server.requests_matching(f"{repo_id}.git/info/lfs/objects/batch", method="POST")
    assert [r.path.rsplit("/", 1)[-1] for r in _lfs_puts(hub_server)] == [big_oid]
    assert hub_server.requests_matching(f"/_lfs/model/{repo_id}/{big_oid}/verify", method="POST")
    (commit_request,) = hub_server.requests_matching(f"/api/models/{repo_id}/commit/main")
    assert commit_request.lfs and commit_request.status == 200

    # Download metadata: the headers huggingface_hub relies on.
    metadata = get_hf_file_metadata(hf_hub_url(repo_id, "block_emb.dat"))
    assert metadata.commit_hash == commit.oid
    assert metadata.etag == big_oid  # LFS files: sha256 (X-Linked-Etag)
    assert metadata.size == BIG_SIZE
    config_metadata = get_hf_file_metadata(hf_hub_url(repo_id, "config.json"))
    assert config_metadata.etag == git_blob_oid((model_folder / "config.json").read_bytes())  # regular: git sha1

    cache_dir = tmp_path / "cache"
    expected = _files(model_folder)
    for filename, content in expected.items():
        assert Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir)).read_bytes() == content
    snapshot = Path(snapshot_download(repo_id, cache_dir=tmp_path / "snapshot_cache"))
    assert snapshot.name == commit.oid
    downloaded = _files(snapshot)
    assert downloaded.pop(".gitattributes").startswith(b"*.7z filter=lfs")
    assert downloaded == expected

    tree = {entry.path: entry for entry in api.list_repo_tree(repo_id, recursive=True)}
    assert tree["block_emb.dat"].lfs.sha256 == big_oid and tree["block_emb.dat"].size == BIG_SIZE
    assert tree["config.json"].lfs is None
    assert set(api.list_repo_files(repo_id)) == {".gitattributes", *expected}
    assert [e.path for e in api.list_repo_tree(repo_id, path_in_repo="docs")] == ["docs/notes.txt"]
    paths_info = api.get_paths_info(repo_id, ["config.json", "docs", "missing.bin"])
    assert [(type(e).__name__, e.path) for e in paths_info] == [("RepoFile", "config.json"), ("RepoFolder", "docs")]
    assert api.file_exists(repo_id, "docs/notes.txt") and not api.file_exists(repo_id, "missing.bin")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.bin", cache_dir=cache_dir)


def test_reupload_unchanged_folder_creates_no_commit(hub_server, model_folder):
    api = HfApi()
    repo_id = "tester/tiny-realm"
    api.create_repo(repo_id)
    first = api.upload_folder(repo_id=repo_id, folder_path=model_folder)
    num_commits = len(hub_server.get_repo(repo_id).commits)
    hub_server.clear_log()

    second = api.upload_folder(repo_id=repo_id, folder_path=model_folder)

    assert second.oid == first.oid == hub_server.branch_head(repo_id)
    assert len(hub_server.get_repo(repo_id).commits) == num_commits
    # The client compared the oids returned by preupload and skipped the commit; the LFS batch answered "already
    # present", so nothing was uploaded again.
    assert hub_server.requests_matching("/preupload/main")
    assert hub_server.requests_matching(".git/info/lfs/objects/batch")
    assert not _lfs_puts(hub_server)
    assert not hub_server.requests_matching("/commit/")


def test_branch_and_pull_request_leave_main_unchanged(hub_server, model_folder, tmp_path):
    api = HfApi()
    repo_id = "tester/tiny-realm"
    api.create_repo(repo_id)
    main_head = api.upload_folder(repo_id=repo_id, folder_path=model_folder).oid

    api.create_branch(repo_id, branch="v1")
    api.create_branch(repo_id, branch="v1", exist_ok=True)
    on_branch = api.upload_file(
        path_or_fileobj=b"branch only", path_in_repo="extra.txt", repo_id=repo_id, revision="v1"
    )
    assert hub_server.branch_head(repo_id, "v1") == on_branch.oid != main_head
    assert hub_server.branch_head(repo_id) == main_head
    assert (
        Path(hf_hub_download(repo_id, "extra.txt", revision="v1", cache_dir=tmp_path)).read_bytes() == b"branch only"
    )
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "extra.txt", cache_dir=tmp_path)

    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "config.json").write_text(json.dumps({"model_type": "realm_hf", "hidden_size": 64}))
    pr_commit = api.upload_folder(repo_id=repo_id, folder_path=changed, create_pr=True, commit_message="Bigger")
    assert pr_commit.pr_url == f"{hub_server.url}/{repo_id}/discussions/1"
    assert pr_commit.pr_revision == "refs/pr/1" and pr_commit.pr_num == 1
    assert hub_server.branch_head(repo_id) == main_head
    assert api.model_info(repo_id).sha == main_head
    pr_config = hf_hub_download(repo_id, "config.json", revision="refs/pr/1", cache_dir=tmp_path)
    assert json.loads(Path(pr_config).read_text())["hidden_size"] == 64
    main_config = hf_hub_download(repo_id, "config.json", cache_dir=tmp_path)
    assert json.loads(Path(main_config).read_text())["hidden_size"] == 32

    refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": main_head, "v1": on_branch.oid}
    assert [(p.ref, p.target_commit) for p in refs.pull_requests] == [("refs/pr/1", pr_commit.oid)]
    assert [c.title for c in api.list_repo_commits(repo_id, revision="refs/pr/1")][:2] == [
        "Bigger",
        "Upload folder using huggingface_hub",
    ]


def test_deletions_tags_and_parent_commit_check(hub_server, model_folder):
    api = HfApi()
    repo_id = "tester/tiny-realm"
    api.create_repo(repo_id)
    first = api.upload_folder(repo_id=repo_id, folder_path=model_folder).oid
    api.create_tag(repo_id, tag="v0.1")
    api.delete_file("config.json", repo_id=repo_id)
    api.delete_folder("docs", repo_id=repo_id)
    assert set(hub_server.list_files(repo_id)) == {".gitattributes", "block_emb.dat"}
    with pytest.raises(EntryNotFoundError):
        api.delete_file("config.json", repo_id=repo_id)
    with pytest.raises(HfHubHTTPError) as excinfo:  # main moved on since `first`
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, parent_commit=first)
    assert excinfo.value.response.status_code == 412
    refs = api.list_repo_refs(repo_id)
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v0.1", first)]
    assert set(api.list_repo_files(repo_id, revision="v0.1")) == {".gitattributes", *_files(model_folder)}
    assert [c.title for c in api.list_repo_commits(repo_id)] == [
        "Delete folder docs with huggingface_hub",
        "Delete config.json with huggingface_hub",
        "Upload folder using huggingface_hub",
        "initial commit",
    ]


def test_missing_or_invalid_token_is_rejected(hub_server):
    anonymous = HfApi(token=False)  # HF_TOKEN is set by the fixture; token=False sends no Authorization header
    with pytest.raises(HfHubHTTPError, match="Authentication required") as excinfo:
        anonymous.create_repo("tester/nope")
    assert excinfo.value.response.status_code == 401

    HfApi().create_repo("tester/tiny-realm")
    with pytest.raises(HfHubHTTPError, match="Authentication required") as excinfo:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="tester/tiny-realm")
    assert excinfo.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="Invalid credentials"):
        HfApi(token="hf_not_a_valid_token").upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="tester/tiny-realm"
        )
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        HfApi(token="hf_not_a_valid_token").whoami()
    assert hub_server.list_files("tester/tiny-realm").keys() == {".gitattributes"}
    # Reads of a public repo need no token.
    assert anonymous.model_info("tester/tiny-realm").sha == hub_server.branch_head("tester/tiny-realm")


def test_injected_500_on_commit_then_retry_succeeds(hub_server, model_folder):
    api = HfApi()
    repo_id = "tester/tiny-realm"
    api.create_repo(repo_id)
    head = hub_server.branch_head(repo_id)
    hub_server.fail_next("/commit/", status=500)

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.upload_folder(repo_id=repo_id, folder_path=model_folder)
    assert excinfo.value.response.status_code == 500
    assert hub_server.branch_head(repo_id) == head  # nothing was committed
    assert [r.injected for r in hub_server.requests_matching("/commit/")] == [True]

    commit = api.upload_folder(repo_id=repo_id, folder_path=model_folder)
    assert hub_server.branch_head(repo_id) == commit.oid != head
    assert hub_server.read_file(repo_id, "block_emb.dat") == (model_folder / "block_emb.dat").read_bytes()
    # The LFS object uploaded by the failed attempt was reused: a single PUT in total.
    assert len(_lfs_puts(hub_server)) == 1


def test_transient_lfs_put_failure_is_retried_by_the_client(hub_server):
    api = HfApi()
    repo_id = "tester/tiny-realm"
    api.create_repo(repo_id)
    hub_server.fail_next("/_lfs/", status=503, method="PUT")
    data = b"\0binary" * 100
    api.upload_file(path_or_fileobj=data, path_in_repo="weights.bin", repo_id=repo_id)  # http_backoff retries (~1 s)
    assert [r.status for r in hub_server.requests_matching("/_lfs/", method="PUT")] == [503, 200]
    assert hub_server.read_file(repo_id, "weights.bin") == data


def test_readme_metadata_is_validated(hub_server):
    api = HfApi()
    api.create_repo("tester/tiny-realm")
    card = b"---\nlibrary_name: realm_hf\ntags:\n- realm\n---\n# Tiny REALM\n"
    api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id="tester/tiny-realm")
    assert hub_server.requests_matching("/api/validate-yaml")
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_file(
            path_or_fileobj=b"---\ntags: [unclosed\n---\n", path_in_repo="README.md", repo_id="tester/tiny-realm"
        )
    assert hub_server.read_file("tester/tiny-realm", "README.md") == card


def test_environment_variables_work_in_a_fresh_process(hub_server, tmp_path):
    """HF_ENDPOINT is read when huggingface_hub is imported: set it before the import (here: in a subprocess)."""
    script = textwrap.dedent(
        """
        import json, os
        from huggingface_hub import HfApi, constants, hf_api, hf_hub_download

        out = {"endpoint": constants.ENDPOINT, "module_api": hf_api.api.endpoint, "xet": constants.HF_HUB_DISABLE_XET}
        os.environ["HF_ENDPOINT"] = "http://example.invalid"  # too late: the constant was read at import
        out["endpoint_after_setenv"] = constants.ENDPOINT
        api = HfApi()
        api.create_repo("tester/from-subprocess")
        api.upload_file(path_or_fileobj=b"\\0" * 64, path_in_repo="w.bin", repo_id="tester/from-subprocess")
        with open(hf_hub_download("tester/from-subprocess", "w.bin"), "rb") as f:
            out["roundtrip"] = f.read() == b"\\0" * 64
        print(json.dumps(out))
        """
    )
    env = dict(os.environ)  # the fixture exported HF_ENDPOINT, HF_TOKEN, HF_HUB_DISABLE_XET=1 and a scratch HF_HOME
    env["HF_HOME"] = str(tmp_path / "hf_home")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {
        "endpoint": hub_server.url,
        "module_api": hub_server.url,
        "xet": True,
        "endpoint_after_setenv": hub_server.url,
        "roundtrip": True,
    }
    assert any(r.lfs for r in hub_server.requests_matching("/tester/from-subprocess.git/info/lfs/objects/batch"))


def test_xet_enabled_upload_is_not_supported(hub_server, monkeypatch):
    """Documents the Xet gotcha: with hf_xet installed and Xet enabled, LFS-mode files need a Xet token endpoint."""
    pytest.importorskip("hf_xet")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    api = HfApi()
    api.create_repo("tester/tiny-realm")
    api.upload_file(path_or_fileobj=b"plain text", path_in_repo="ok.txt", repo_id="tester/tiny-realm")  # regular
    with pytest.raises(Exception, match="xet-write-token"):
        api.upload_file(path_or_fileobj=b"\0" * 16, path_in_repo="w.bin", repo_id="tester/tiny-realm")
    assert hub_server.requests_matching("/xet-write-token/main")[0].status == 404


def test_server_requires_auth_for_whoami_and_stops_cleanly():
    with HubServer() as server:
        request = urllib.request.Request(f"{server.url}/api/whoami-v2")
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(request, timeout=10)
        assert excinfo.value.code == 401
        request.add_header("Authorization", f"Bearer {server.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["name"] == server.user
        url = server.url
    assert [(r.path, r.status, r.user) for r in server.requests] == [
        ("/api/whoami-v2", 401, None),
        ("/api/whoami-v2", 200, server.user),
    ]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/api/whoami-v2", timeout=5)


def test_transformers_and_datasets_imported_before_the_fixture(hub_server):
    """The in-process patch also reaches transformers' shared HfApi and datasets' HF_ENDPOINT copy."""
    torch = pytest.importorskip("torch")
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")

    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20
    )
    model = transformers.BertModel(config).eval()
    model.push_to_hub("tester/tiny-bert")
    reloaded = transformers.AutoModel.from_pretrained("tester/tiny-bert").eval()
    input_ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(model(input_ids).last_hidden_state, reloaded(input_ids).last_hidden_state)
    assert hub_server.list_files("tester/tiny-bert")["model.safetensors"].lfs

    datasets.Dataset.from_dict({"question": ["q1", "q2"]}).push_to_hub("tester/tiny-questions")
    assert datasets.load_dataset("tester/tiny-questions", split="train")["question"] == ["q1", "q2"]
