"""The one local-or-Hub resolver (`realm_hf.retrieval.storage.resolve_directory`)."""

import pytest

from realm_hf.retrieval.storage import resolve_directory


def test_local_directories_and_their_subfolders(tmp_path):
    (tmp_path / "index").mkdir()
    assert resolve_directory(tmp_path) == tmp_path
    assert resolve_directory(str(tmp_path), subfolder="index") == tmp_path / "index"
    with pytest.raises(ValueError, match="relative path inside"):
        resolve_directory(tmp_path, subfolder="../elsewhere")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty string"),
        ("./missing", "neither a local directory nor a valid Hub repo id: not a directory"),
        ("a/b/c", "neither a local directory nor a valid Hub repo id: not a directory"),
        ("tester/bad name", "neither a local directory nor a valid Hub repo id"),
    ],
)
def test_what_is_neither_a_directory_nor_a_repo_id_is_refused_without_a_request(name, message, monkeypatch):
    monkeypatch.setattr(
        "realm_hf.retrieval.storage.snapshot_download", lambda *a, **k: pytest.fail("no download expected")
    )
    with pytest.raises(ValueError, match=message):
        resolve_directory(name)


def test_a_file_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        resolve_directory(tmp_path / "weights.bin")


def test_repo_ids_are_downloaded_with_the_given_options(monkeypatch, tmp_path):
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tmp_path)

    monkeypatch.setattr("realm_hf.retrieval.storage.snapshot_download", snapshot_download)
    assert (
        resolve_directory("owner/index", repo_type="dataset", subfolder="index", revision="v1") == tmp_path / "index"
    )
    ((repo_id, kwargs),) = calls
    assert repo_id == "owner/index" and kwargs["repo_type"] == "dataset" and kwargs["revision"] == "v1"
    assert kwargs["allow_patterns"] == ["index/*"] and kwargs["library_name"] == "realm_hf"
