"""A local, in-memory, Hugging Face Hub-compatible HTTP server for offline publishing tests.

Written with the Python standard library only (`http.server`); PyYAML is used by `/api/validate-yaml` when it is
importable. It implements the part of the Hub HTTP API that `huggingface_hub` 2.4 uses to create repos, commit files
(regular files base64 in the NDJSON commit, large files through the Git-LFS "basic" transfer), create branches and
pull requests, and download files (`hf_hub_download`, `snapshot_download`). Nothing in the client is mocked: the real
`huggingface_hub` talks HTTP to this server over a socket on `127.0.0.1`.

Usage in tests: `tests/conftest.py` imports the `hub_server` fixture, so every test module can take it:

```py
def test_push(hub_server, tmp_path):
    from huggingface_hub import HfApi

    api = HfApi()  # endpoint and token come from the patched constants / environment
    api.create_repo("tester/my-model")
    ...
    assert hub_server.requests_matching("/info/lfs/objects/batch")
```

How the client is pointed at the server (what was checked with huggingface_hub 2.4.0; see `patch_hub_client`):

- `HF_ENDPOINT` is read once, when `huggingface_hub.constants` is imported. Setting the environment variable later
  changes nothing in the running process. Either set it before the first import of `huggingface_hub` /
  `transformers` / `datasets` (run such code in a subprocess, or in a `conftest.py` executed before anything imports
  them), or patch the already-imported constants. The `hub_server` fixture does both: it sets the environment
  variables (so subprocesses see the server) and monkeypatches, for the duration of the test:

  - `huggingface_hub.constants.ENDPOINT` (read at call time by `HfApi()` construction, `hf_hub_url`,
    `RepoCard.validate`, the LFS batch helper and the agent-harness probe);
  - `huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE` (download URLs are built from it, not from `ENDPOINT`);
  - `huggingface_hub.constants.HF_URL_HOSTS` (hosts whose redirects keep the auth header);
  - `huggingface_hub.constants.HF_HUB_DISABLE_XET = True` and `HF_HUB_OFFLINE = False` (both are read at call time);
  - the cache / token paths (`HF_HUB_CACHE`, `HF_TOKEN_PATH`, `HF_STORED_TOKENS_PATH`, `AGENT_HARNESSES_PATH`),
    pointed into a temporary `HF_HOME`;
  - `huggingface_hub.hf_api.api.endpoint`: the module-level `HfApi` instance behind `huggingface_hub.upload_file`,
    `create_repo`, ... captured `ENDPOINT` when `huggingface_hub` was imported;
  - `transformers.utils.hub._hf_api` (reset to `None`, so transformers builds its shared `HfApi` again with the
    patched endpoint) and `datasets.config`'s own copies (`HF_ENDPOINT`, `HUB_DATASETS_URL`, `HF_HUB_OFFLINE`, the
    datasets cache paths), when those libraries are already imported.

  `HfApi` objects built *before* the fixture ran keep the old endpoint (`HfApi.__init__` stores it); build them inside
  the test or pass `endpoint=hub_server.url`.
- Xet: with `hf_xet` installed, `huggingface_hub` >= 1.20 sends every "lfs"-mode file through Xet, which this server
  cannot provide (`GET .../xet-write-token/...` gets a 404). `HF_HUB_DISABLE_XET=1` (or the patched constant) brings
  back the classic LFS batch + PUT + verify path; `upload_folder` then makes a single `create_commit` instead of the
  Xet pipeline. Downloads never need Xet: the server sends no `X-Xet-Hash` header.
- Retries: `http_backoff` retries 408/429/5xx on preupload, LFS batch, LFS PUT and LFS verify (5 retries, waits of
  1, 2, 4, 8, 8 s). The `/commit` POST is *not* retried, so an injected 500 there surfaces immediately.

Repo ids must have a namespace (`user/name`). Not implemented: Xet, multipart LFS, discussions other than the
`refs/pr/N` refs created by `create_pr=True`, gated repos, pagination (the tree is returned in one page), spaces
runtime endpoints, super-squash, and `lastCommit`/`securityFileStatus` expansions.
"""

import base64
import binascii
import fnmatch
import hashlib
import http.server
import json
import logging
import os
import re
import secrets
import socket
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest


logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "hf_fake_hub_write_token"
DEFAULT_USER = "tester"
LFS_THRESHOLD = 10 * 1024 * 1024  # files of this size or more are LFS, as on the Hub

_TYPES_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
_INVALID_CREDENTIALS = "Invalid credentials in Authorization header"

# The `.gitattributes` the Hub writes into the first commit of a new repo (abridged).
_DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy *.npz "
        "*.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar "
        "*.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents* *.faiss"
    ).split()
)

_API_REPO_RE = re.compile(
    r"^/api/(?P<types>models|datasets|spaces|kernels)/(?P<ns>[^/]+)/(?P<name>[^/]+)(?P<rest>/.*)?$"
)
_RESOLVE_RE = re.compile(
    r"^/(?:(?P<types>datasets|spaces|kernels)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)
_LFS_BATCH_RE = re.compile(
    r"^/(?:(?P<types>datasets|spaces|kernels)/)?(?P<ns>[^/]+)/(?P<name>[^/]+?)\.git/info/lfs/objects/batch$"
)
_LFS_OBJECT_RE = re.compile(
    r"^/_lfs/(?P<type>model|dataset|space|kernel)/(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<oid>[0-9a-f]{64})(?P<verify>/verify)?$"
)


# ---------------------------------------------------------------------------------------------------------------------
# Git-like storage
# ---------------------------------------------------------------------------------------------------------------------


def git_blob_oid(data: bytes) -> str:
    """Git object id of a blob (`git hash-object`): sha1 of `b"blob <size>\\0" + data`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git-LFS pointer file stored in git in place of an LFS file's content."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class RepoFile:
    """A file in a commit: `git_oid` is the blob id (of the content, or of the LFS pointer for LFS files)."""

    size: int
    sha256: str
    git_oid: str
    lfs: bool

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass(frozen=True)
class Commit:
    """A commit: a full snapshot of the repo's files plus metadata."""

    oid: str
    parents: tuple[str, ...]
    files: dict[str, RepoFile]
    title: str
    message: str
    author: str
    date: str


@dataclass
class Repo:
    """One repository: its commits, refs and the LFS objects uploaded to it."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pull_requests: dict[int, str] = field(default_factory=dict)
    lfs_objects: set[str] = field(default_factory=set)

    def history(self, head: str) -> Iterator[Commit]:
        """Commits reachable from `head` following first parents, newest first."""
        oid: str | None = head
        while oid is not None:
            commit = self.commits[oid]
            yield commit
            oid = commit.parents[0] if commit.parents else None


@dataclass(frozen=True)
class RequestRecord:
    """One request as seen by the server."""

    method: str
    path: str
    query: str
    status: int
    user: str | None
    lfs: bool
    injected: bool


@dataclass
class _FailureRule:
    path_substring: str
    status: int
    method: str | None
    remaining: int
    message: str


class _InvalidToken:
    """Marker for a request that sent a token the server does not know."""


class _HttpError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        if error_code is not None:
            self.headers["X-Error-Code"] = error_code


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None  # for HEAD: the length of the entity that GET would return


def _json_response(obj: Any, status: int = 200, headers: dict | None = None) -> _Response:
    return _Response(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


def _pattern_matches(pattern: str, path: str) -> bool:
    pattern = pattern.lstrip("/")
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatch.fnmatchcase(path, pattern.replace("**/", "*"))


# ---------------------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------------------


class HubServer:
    """
    In-memory Hub-compatible server on `127.0.0.1` and a free port, run in a background thread.

    Args:
        tokens (`dict[str, str]`, *optional*):
            Accepted bearer tokens mapped to user names. Defaults to `{DEFAULT_TOKEN: DEFAULT_USER}`.
        lfs_threshold (`int`, *optional*, defaults to 10 MiB):
            Files at least this large are uploaded through LFS (as are binary files and `.gitattributes` LFS
            patterns).

    Attributes:
        url (`str`): The base URL, e.g. `http://127.0.0.1:54321`; use it as `HF_ENDPOINT`.
        token (`str`): A valid write token.
        user (`str`): The user name of `token`.
        requests (`list[RequestRecord]`): Every request handled, in order.
    """

    def __init__(self, tokens: dict[str, str] | None = None, lfs_threshold: int = LFS_THRESHOLD):
        self.tokens = dict(tokens) if tokens is not None else {DEFAULT_TOKEN: DEFAULT_USER}
        self.token, self.user = next(iter(self.tokens.items()))
        self.lfs_threshold = lfs_threshold
        self.requests: list[RequestRecord] = []
        self._repos: dict[tuple[str, str], Repo] = {}
        self._content: dict[str, bytes] = {}  # sha256 -> bytes, for regular and LFS files
        self._failures: list[_FailureRule] = []
        self._lock = threading.RLock()
        self._upload_secret = secrets.token_hex(16)
        self._httpd: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None
        self._commit_counter = 0

    # -- lifecycle -----------------------------------------------------------------------------------------------------

    def start(self) -> "HubServer":
        """Binds to a free port on 127.0.0.1 and serves in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("The server is already running.")
        self._httpd = _ThreadingServer(("127.0.0.1", 0), _Handler, hub=self)
        port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-hub-{port}", daemon=True
        )
        self._thread.start()
        logger.debug("Fake Hub listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stops serving, closes the listening socket and every open (keep-alive) connection."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- test helpers --------------------------------------------------------------------------------------------------

    def fail_next(
        self, path_substring: str, status: int = 500, *, times: int = 1, method: str | None = None, message: str = ""
    ) -> None:
        """
        Makes the next matching request(s) fail. The request body is read first, so the connection stays usable, and
        the request is logged with `injected=True`.

        Args:
            path_substring (`str`):
                Substring of the (URL-decoded) request path, e.g. `"/commit/"`, `"/preupload/"`, `"/_lfs/"`.
            status (`int`, *optional*, defaults to 500):
                HTTP status of the injected response (its JSON body is `{"error": message}`).
            times (`int`, *optional*, defaults to 1):
                How many matching requests fail. Note that the client retries 408/429/5xx on preupload and on the
                LFS batch/PUT/verify calls (up to 5 retries, about 23 s in total), but not on `/commit`.
            method (`str`, *optional*):
                Only requests with this HTTP method match.
            message (`str`, *optional*):
                Error message of the injected response.
        """
        with self._lock:
            self._failures.append(
                _FailureRule(
                    path_substring, status, method.upper() if method else None, times, message or "Injected failure"
                )
            )

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def requests_matching(self, path_substring: str, method: str | None = None) -> list[RequestRecord]:
        """The logged requests whose path contains `path_substring` (and whose method is `method`, if given)."""
        with self._lock:
            return [
                record
                for record in self.requests
                if path_substring in record.path and (method is None or record.method == method.upper())
            ]

    def get_repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self._lock:
            return self._repos[(repo_type, repo_id)]

    def branch_head(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> str:
        return self.get_repo(repo_id, repo_type).branches[branch]

    def list_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, RepoFile]:
        repo = self.get_repo(repo_id, repo_type)
        with self._lock:
            return dict(repo.commits[self._resolve(repo, revision)].files)

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        return self._content[self.list_files(repo_id, revision, repo_type)[path].sha256]

    # -- request handling ----------------------------------------------------------------------------------------------

    def _handle(self, method: str, raw_target: str, headers, body: bytes) -> tuple[_Response, RequestRecord]:
        split = urllib.parse.urlsplit(raw_target)
        raw_path = split.path
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        ctx = _Context(hub=self, method=method, raw_path=raw_path, query=query, headers=headers, body=body)
        injected = False
        try:
            ctx.user = self._authenticate(headers)
            rule = self._take_failure(method, urllib.parse.unquote(raw_path))
            if rule is not None:
                injected = True
                raise _HttpError(rule.status, rule.message)
            response = self._route(ctx)
        except _HttpError as err:
            response = _json_response({"error": err.message}, err.status, err.headers)
        except Exception as err:  # a bug in the fake must show up as a 500, not as a hung client
            logger.exception("Fake Hub failed on %s %s", method, raw_target)
            response = _json_response({"error": f"Fake hub internal error: {err!r}"}, 500)
        record = RequestRecord(
            method=method,
            path=urllib.parse.unquote(raw_path),
            query=split.query,
            status=response.status,
            user=ctx.user if isinstance(ctx.user, str) else None,
            lfs=ctx.lfs,
            injected=injected,
        )
        with self._lock:
            self.requests.append(record)
        return response, record

    def _authenticate(self, headers) -> str | None | _InvalidToken:
        authorization = headers.get("Authorization")
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        return user if user is not None else _InvalidToken()

    def _take_failure(self, method: str, path: str) -> _FailureRule | None:
        with self._lock:
            for rule in self._failures:
                if rule.path_substring in path and (rule.method is None or rule.method == method):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._failures.remove(rule)
                    return rule
        return None

    def _route(self, ctx: "_Context") -> _Response:
        path, method = ctx.raw_path, ctx.method
        if path == "/api/whoami-v2" and method == "GET":
            return self._whoami(ctx)
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(ctx)
        if path == "/api/repos/delete" and method == "DELETE":
            return self._delete_repo(ctx)
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml(ctx)
        if (match := _API_REPO_RE.match(path)) is not None:
            return self._repo_api(ctx, _TYPES_PLURAL[match["types"]], f"{match['ns']}/{match['name']}", match["rest"])
        if (match := _RESOLVE_RE.match(path)) is not None and method in ("GET", "HEAD"):
            repo_type = _TYPES_PLURAL[match["types"]] if match["types"] else "model"
            repo_id = f"{urllib.parse.unquote(match['ns'])}/{urllib.parse.unquote(match['name'])}"
            revision = urllib.parse.unquote(match["rev"])
            return self._resolve_file(ctx, repo_type, repo_id, revision, urllib.parse.unquote(match["path"]))
        if (match := _LFS_BATCH_RE.match(path)) is not None and method == "POST":
            repo_type = _TYPES_PLURAL[match["types"]] if match["types"] else "model"
            return self._lfs_batch(ctx, repo_type, f"{match['ns']}/{match['name']}")
        if (match := _LFS_OBJECT_RE.match(path)) is not None:
            repo_id = f"{match['ns']}/{match['name']}"
            if match["verify"] and method == "POST":
                return self._lfs_verify(ctx, match["type"], repo_id, match["oid"])
            if not match["verify"] and method == "PUT":
                return self._lfs_upload(ctx, match["type"], repo_id, match["oid"])
        raise _HttpError(404, f"Not found (the fake Hub does not implement {method} {path})")

    def _repo_api(self, ctx: "_Context", repo_type: str, raw_repo_id: str, rest: str | None) -> _Response:
        repo_id = urllib.parse.unquote(raw_repo_id)
        segments = [urllib.parse.unquote(segment) for segment in (rest or "").split("/")[1:]]
        action = segments[0] if segments else ""
        method = ctx.method
        if method == "GET" and action == "":
            return self._repo_info(ctx, repo_type, repo_id, None)
        if method == "GET" and action == "revision" and len(segments) == 2:
            return self._repo_info(ctx, repo_type, repo_id, segments[1])
        if method == "GET" and action == "tree" and len(segments) in (2, 3):
            return self._tree(ctx, repo_type, repo_id, segments[1], segments[2] if len(segments) == 3 else "")
        if method == "POST" and action == "paths-info" and len(segments) == 2:
            return self._paths_info(ctx, repo_type, repo_id, segments[1])
        if method == "GET" and action == "refs" and len(segments) == 1:
            return self._refs(ctx, repo_type, repo_id)
        if method == "GET" and action == "commits" and len(segments) == 2:
            return self._commits(ctx, repo_type, repo_id, segments[1])
        if action == "branch" and len(segments) == 2 and method in ("POST", "DELETE"):
            return self._branch(ctx, repo_type, repo_id, segments[1])
        if action == "tag" and len(segments) == 2 and method in ("POST", "DELETE"):
            return self._tag(ctx, repo_type, repo_id, segments[1])
        if method == "POST" and action == "preupload" and len(segments) == 2:
            return self._preupload(ctx, repo_type, repo_id, segments[1])
        if method == "POST" and action == "commit" and len(segments) == 2:
            return self._commit(ctx, repo_type, repo_id, segments[1])
        raise _HttpError(
            404, f"Not found (the fake Hub does not implement {method} /api/{repo_type}s/{repo_id}{rest})"
        )

    # -- helpers -------------------------------------------------------------------------------------------------------

    def _require_user(self, ctx: "_Context") -> str:
        if isinstance(ctx.user, _InvalidToken):
            raise _HttpError(401, _INVALID_CREDENTIALS, headers={"X-Error-Message": _INVALID_CREDENTIALS})
        if ctx.user is None:
            raise _HttpError(
                401,
                "Authentication required: this operation needs a write token sent as `Authorization: Bearer <token>`.",
            )
        return ctx.user

    def _get_repo(self, ctx: "_Context", repo_type: str, repo_id: str, write: bool = False) -> Repo:
        if write:
            self._require_user(ctx)
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not isinstance(ctx.user, str)):
            raise _HttpError(
                404 if repo is None else 401, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound"
            )
        return repo

    def _resolve(self, repo: Repo, revision: str) -> str:
        if revision.startswith("refs/heads/"):
            revision = revision[len("refs/heads/") :]
        if revision in repo.branches:
            return repo.branches[revision]
        if revision.startswith("refs/tags/") and revision[len("refs/tags/") :] in repo.tags:
            return repo.tags[revision[len("refs/tags/") :]]
        if revision in repo.tags:
            return repo.tags[revision]
        if (match := re.fullmatch(r"refs/pr/(\d+)", revision)) is not None and int(match[1]) in repo.pull_requests:
            return repo.pull_requests[int(match[1])]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            found = [oid for oid in repo.commits if oid.startswith(revision)]
            if len(found) == 1:
                return found[0]
        raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _new_commit(
        self, repo: Repo, parent: str | None, files: dict[str, RepoFile], title: str, message: str, author: str
    ) -> Commit:
        self._commit_counter += 1
        parents = (parent,) if parent else ()
        date = _now()
        digest = hashlib.sha1(
            json.dumps(
                [parents, sorted((path, f.git_oid) for path, f in files.items()), title, message, author, date],
            ).encode()
            + b"%d" % self._commit_counter
        ).hexdigest()
        commit = Commit(digest, parents, dict(files), title, message, author, date)
        repo.commits[digest] = commit
        return commit

    def _store_file(self, data: bytes, lfs: bool) -> RepoFile:
        sha256 = hashlib.sha256(data).hexdigest()
        self._content.setdefault(sha256, data)
        git_oid = git_blob_oid(lfs_pointer(sha256, len(data)) if lfs else data)
        return RepoFile(size=len(data), sha256=sha256, git_oid=git_oid, lfs=lfs)

    def _entry(self, path: str, repo_file: RepoFile) -> dict:
        entry = {"type": "file", "oid": repo_file.git_oid, "size": repo_file.size, "path": path}
        if repo_file.lfs:
            entry["lfs"] = {
                "oid": repo_file.sha256,
                "size": repo_file.size,
                "pointerSize": len(lfs_pointer(repo_file.sha256, repo_file.size)),
            }
        return entry

    @staticmethod
    def _directory_entry(path: str, files: dict[str, RepoFile]) -> dict:
        prefix = path + "/"
        listing = sorted((p, f.git_oid) for p, f in files.items() if p.startswith(prefix))
        return {"type": "directory", "oid": hashlib.sha1(json.dumps(listing).encode()).hexdigest(), "path": path}

    def _gitattributes_lfs_patterns(self, files: dict[str, RepoFile]) -> list[str]:
        attributes = files.get(".gitattributes")
        if attributes is None:
            return []
        patterns = []
        for line in self._content[attributes.sha256].decode("utf-8", "replace").splitlines():
            parts = line.split()
            if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    # -- endpoints: account and repos ----------------------------------------------------------------------------------

    def _whoami(self, ctx: "_Context") -> _Response:
        user = self._require_user(ctx)
        return _json_response(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user.title(),
                "email": f"{user}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
            }
        )

    def _create_repo(self, ctx: "_Context") -> _Response:
        user = self._require_user(ctx)
        payload = ctx.json()
        name = payload.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name):
            raise _HttpError(400, f"Invalid repo name: {name!r}")
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise _HttpError(400, f"Invalid repo type: {repo_type!r}")
        repo_id = f"{payload.get('organization') or user}/{name}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                return _json_response({"error": f"You already created this {repo_type} repo", "url": url}, 409)
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
            files = {".gitattributes": self._store_file(_DEFAULT_GITATTRIBUTES.encode(), lfs=False)}
            repo.branches["main"] = self._new_commit(repo, None, files, "initial commit", "", user).oid
            self._repos[(repo_type, repo_id)] = repo
        return _json_response({"url": url, "name": repo_id, "id": hashlib.sha1(url.encode()).hexdigest()[:24]})

    def _delete_repo(self, ctx: "_Context") -> _Response:
        user = self._require_user(ctx)
        payload = ctx.json()
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        with self._lock:
            if self._repos.pop((payload.get("type") or "model", repo_id), None) is None:
                raise _HttpError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return _json_response({})

    def _validate_yaml(self, ctx: "_Context") -> _Response:
        content = ctx.json().get("content", "")
        errors = []
        if content.startswith("---"):
            match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.DOTALL)
            if match is None:
                errors.append("The YAML metadata block is not closed by a `---` line.")
            else:
                try:
                    import yaml
                except ImportError:  # stdlib-only fallback: only the delimiters are checked
                    yaml = None
                if yaml is not None:
                    try:
                        metadata = yaml.safe_load(match[1])
                    except yaml.YAMLError as err:
                        errors.append(f"Invalid YAML in the metadata block: {err}")
                    else:
                        if metadata is not None and not isinstance(metadata, dict):
                            errors.append("The YAML metadata must be a mapping.")
        if errors:
            return _json_response({"errors": [{"message": error} for error in errors], "warnings": []}, 400)
        return _json_response({"errors": [], "warnings": []})

    def _repo_info(self, ctx: "_Context", repo_type: str, repo_id: str, revision: str | None) -> _Response:
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id)
            commit = repo.commits[self._resolve(repo, revision or "main")]
            with_blobs = "blobs" in ctx.query
            siblings = []
            for path, repo_file in sorted(commit.files.items()):
                sibling: dict[str, Any] = {"rfilename": path}
                if with_blobs:
                    sibling.update(size=repo_file.size, blobId=repo_file.git_oid)
                    if repo_file.lfs:
                        sibling["lfs"] = {
                            "sha256": repo_file.sha256,
                            "size": repo_file.size,
                            "pointerSize": len(lfs_pointer(repo_file.sha256, repo_file.size)),
                        }
                siblings.append(sibling)
            info = {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            }
            if repo_type == "model":
                info["modelId"] = repo_id
        return _json_response(info)

    def _tree(self, ctx: "_Context", repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        recursive = ctx.query.get("recursive", ["false"])[-1].lower() in ("1", "true")
        path = path.strip("/")
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id)
            files = repo.commits[self._resolve(repo, revision)].files
            prefix = f"{path}/" if path else ""
            if path and path in files:
                raise _HttpError(400, f"{path} is a file, not a directory")
            below = {p: f for p, f in files.items() if p.startswith(prefix)}
            if path and not below:
                raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound")
            entries: list[dict] = []
            directories: set[str] = set()
            for file_path in sorted(below):
                parts = file_path[len(prefix) :].split("/")
                for depth in range(1, len(parts)):
                    if depth > 1 and not recursive:
                        break
                    directory = prefix + "/".join(parts[:depth])
                    if directory not in directories:
                        directories.add(directory)
                        entries.append(self._directory_entry(directory, files))
                if recursive or len(parts) == 1:
                    entries.append(self._entry(file_path, below[file_path]))
        return _json_response(entries)

    def _paths_info(self, ctx: "_Context", repo_type: str, repo_id: str, revision: str) -> _Response:
        form = urllib.parse.parse_qs(ctx.body.decode(), keep_blank_values=True)
        if ctx.headers.get("Content-Type", "").startswith("application/json"):
            form = {"paths": ctx.json().get("paths", [])}
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id)
            files = repo.commits[self._resolve(repo, revision)].files
            entries = []
            for path in form.get("paths", []):
                path = path.strip("/")
                if path in files:
                    entries.append(self._entry(path, files[path]))
                elif any(p.startswith(path + "/") for p in files):
                    entries.append(self._directory_entry(path, files))
        return _json_response(entries)

    def _refs(self, ctx: "_Context", repo_type: str, repo_id: str) -> _Response:
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id)
            refs = {
                "branches": [
                    {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                    for name, oid in sorted(repo.branches.items())
                ],
                "tags": [
                    {"name": name, "ref": f"refs/tags/{name}", "targetCommit": oid}
                    for name, oid in sorted(repo.tags.items())
                ],
                "converts": [],
            }
            if ctx.query.get("include_prs", ["0"])[-1] not in ("", "0", "false"):
                refs["pullRequests"] = [
                    {"name": f"refs/pr/{num}", "ref": f"refs/pr/{num}", "targetCommit": oid}
                    for num, oid in sorted(repo.pull_requests.items())
                ]
        return _json_response(refs)

    def _commits(self, ctx: "_Context", repo_type: str, repo_id: str, revision: str) -> _Response:
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id)
            history = [
                {
                    "id": commit.oid,
                    "title": commit.title,
                    "message": commit.message,
                    "authors": [{"user": commit.author}],
                    "date": commit.date,
                }
                for commit in repo.history(self._resolve(repo, revision))
            ]
        return _json_response(history)

    def _branch(self, ctx: "_Context", repo_type: str, repo_id: str, branch: str) -> _Response:
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id, write=True)
            if ctx.method == "DELETE":
                if branch not in repo.branches:
                    raise _HttpError(404, f"Branch not found: {branch}", "RevisionNotFound")
                if branch == "main":
                    raise _HttpError(403, "Cannot delete the default branch")
                del repo.branches[branch]
                return _json_response({})
            if branch in repo.branches:
                raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
            if not re.fullmatch(r"[A-Za-z0-9._/-]+", branch) or branch.startswith("refs/"):
                raise _HttpError(400, f"Invalid branch name: {branch!r}")
            start = ctx.json().get("startingPoint") or "main"
            repo.branches[branch] = self._resolve(repo, start)
        return _json_response({})

    def _tag(self, ctx: "_Context", repo_type: str, repo_id: str, name: str) -> _Response:
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id, write=True)
            if ctx.method == "DELETE":
                if repo.tags.pop(name, None) is None:
                    raise _HttpError(404, f"Tag not found: {name}", "RevisionNotFound")
                return _json_response({})
            tag = ctx.json().get("tag")
            if not isinstance(tag, str) or not tag:
                raise _HttpError(400, "Missing tag name")
            if tag in repo.tags:
                raise _HttpError(409, f"Tag already exists: {tag}")
            repo.tags[tag] = self._resolve(repo, name)
        return _json_response({})

    # -- endpoints: upload ---------------------------------------------------------------------------------------------

    def _preupload(self, ctx: "_Context", repo_type: str, repo_id: str, revision: str) -> _Response:
        payload = ctx.json()
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id, write=True)
            files = repo.commits[self._resolve(repo, revision)].files
            lfs_patterns = self._gitattributes_lfs_patterns(files)
            gitignore = payload.get("gitIgnore")
            if gitignore is None and ".gitignore" in files:
                gitignore = self._content[files[".gitignore"].sha256].decode("utf-8", "replace")
            ignore_patterns = [
                line.strip() for line in (gitignore or "").splitlines() if line.strip() and not line.startswith("#")
            ]
            answers = []
            for item in payload.get("files", []):
                if not isinstance(item, dict) or not isinstance(item.get("path"), str) or "size" not in item:
                    raise _HttpError(400, f"Invalid preupload entry: {item!r:.200}")
                path, size = item["path"], int(item["size"])
                try:
                    sample = base64.b64decode(item.get("sample", ""), validate=True)
                except binascii.Error:
                    raise _HttpError(400, f"Invalid base64 sample for {path}") from None
                lfs = (
                    size >= self.lfs_threshold
                    or b"\0" in sample
                    or any(_pattern_matches(pattern, path) for pattern in lfs_patterns)
                )
                answer: dict[str, Any] = {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": any(_pattern_matches(pattern, path) for pattern in ignore_patterns),
                }
                existing = files.get(path)
                if existing is not None and existing.lfs == lfs:
                    answer["oid"] = existing.sha256 if lfs else existing.git_oid
                answers.append(answer)
        return _json_response({"files": answers, "commitOid": repo.commits[self._resolve(repo, revision)].oid})

    def _lfs_batch(self, ctx: "_Context", repo_type: str, raw_repo_id: str) -> _Response:
        ctx.lfs = True
        repo_id = urllib.parse.unquote(raw_repo_id)
        payload = ctx.json()
        if payload.get("operation") != "upload":
            raise _HttpError(400, "The fake Hub only implements the LFS 'upload' operation")
        if "basic" not in payload.get("transfers", ["basic"]):
            raise _HttpError(400, "The fake Hub only implements the LFS 'basic' transfer")
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id, write=True)
            objects = []
            for obj in payload.get("objects", []):
                oid, size = obj.get("oid"), obj.get("size")
                if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int):
                    objects.append(
                        {"oid": str(oid), "size": int(size or 0), "error": {"code": 422, "message": "Invalid object"}}
                    )
                    continue
                answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in repo.lfs_objects:
                    base = f"{self.url}/_lfs/{repo_type}/{repo_id}/{oid}"
                    answer["actions"] = {
                        "upload": {"href": f"{base}?signature={self._upload_secret}", "expires_in": 3600},
                        "verify": {"href": f"{base}/verify", "expires_in": 3600},
                    }
                objects.append(answer)
        return _Response(
            200,
            json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode(),
            {"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _lfs_upload(self, ctx: "_Context", repo_type: str, repo_id: str, oid: str) -> _Response:
        ctx.lfs = True
        if ctx.query.get("signature", [""])[-1] != self._upload_secret:
            raise _HttpError(403, "Invalid or missing upload signature")
        if hashlib.sha256(ctx.body).hexdigest() != oid:
            raise _HttpError(400, f"Uploaded content does not match the LFS oid {oid}")
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                raise _HttpError(404, f"Repository not found: {repo_id}", "RepoNotFound")
            self._content.setdefault(oid, ctx.body)
            repo.lfs_objects.add(oid)
        return _Response(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, ctx: "_Context", repo_type: str, repo_id: str, oid: str) -> _Response:
        ctx.lfs = True
        payload = ctx.json()
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id, write=True)
            if oid not in repo.lfs_objects or payload.get("oid") != oid:
                raise _HttpError(404, f"LFS object {oid} was not uploaded")
            if payload.get("size") != len(self._content[oid]):
                raise _HttpError(
                    400, f"LFS object {oid} has size {len(self._content[oid])}, not {payload.get('size')}"
                )
        return _json_response({"success": True})

    def _commit(self, ctx: "_Context", repo_type: str, repo_id: str, revision: str) -> _Response:
        create_pr = ctx.query.get("create_pr", ["0"])[-1] not in ("", "0", "false")
        try:
            lines = [json.loads(line) for line in ctx.body.decode().splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _HttpError(400, f"Invalid NDJSON commit payload: {err}") from None
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The first NDJSON line of a commit must be the header")
        header = lines[0].get("value", {})
        title = header.get("summary") or ""
        if not title.strip():
            raise _HttpError(400, "The commit summary must not be empty")
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id, write=True)
            author = self._require_user(ctx)
            base_oid = self._resolve(repo, revision)
            pr_match = re.fullmatch(r"refs/pr/(\d+)", revision)
            if not create_pr and revision not in repo.branches and pr_match is None:
                raise _HttpError(400, f"Cannot commit to {revision!r}: it is not a branch or a pull request ref")
            parent_commit = header.get("parentCommit")
            if parent_commit:
                if create_pr:
                    base_oid = self._resolve(repo, parent_commit)
                elif not base_oid.startswith(parent_commit):
                    raise _HttpError(
                        412, f"A commit has happened since {parent_commit}. Please refresh and try again."
                    )
            files = dict(repo.commits[base_oid].files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = str(value.get("path", "")).strip("/")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise _HttpError(400, f"Unsupported encoding for {path}")
                    files[path] = self._store_file(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    ctx.lfs = True
                    oid = value.get("oid")
                    if value.get("algo", "sha256") != "sha256" or oid not in repo.lfs_objects:
                        raise _HttpError(
                            422, f"LFS object {oid} for {path} was not uploaded to this repo (missing LFS upload?)"
                        )
                    files[path] = self._store_file(self._content[oid], lfs=True)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    doomed = [p for p in files if p.startswith(path + "/")] if path else list(files)
                    if not doomed:
                        raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
                else:
                    raise _HttpError(400, f"Unknown commit operation {key!r}")
            commit = self._new_commit(repo, base_oid, files, title, header.get("description") or "", author)
            repo_url = self._repo_url(repo)
            pr_url = None
            if create_pr:
                number = max(repo.pull_requests, default=0) + 1
                repo.pull_requests[number] = commit.oid
                pr_url = f"{repo_url}/discussions/{number}"
            elif pr_match is not None:
                repo.pull_requests[int(pr_match[1])] = commit.oid
            else:
                repo.branches[revision.removeprefix("refs/heads/")] = commit.oid
        return _json_response(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{repo_url}/commit/{commit.oid}",
                "pullRequestUrl": pr_url,
            }
        )

    # -- endpoints: download -------------------------------------------------------------------------------------------

    def _resolve_file(self, ctx: "_Context", repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        with self._lock:
            repo = self._get_repo(ctx, repo_type, repo_id)
            commit_oid = self._resolve(repo, revision)
            repo_file = repo.commits[commit_oid].files.get(path)
            if repo_file is None:
                raise _HttpError(
                    404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": commit_oid}
                )
            data = self._content[repo_file.sha256]
        headers = {
            "X-Repo-Commit": commit_oid,
            "ETag": f'"{repo_file.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{path.rsplit("/", 1)[-1]}"',
        }
        if repo_file.lfs:
            headers["X-Linked-Etag"] = f'"{repo_file.sha256}"'
            headers["X-Linked-Size"] = str(repo_file.size)
        status, start, end = 200, 0, len(data)
        range_header = ctx.headers.get("Range")
        if range_header and (match := re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())) is not None:
            if match[1]:
                start, end = int(match[1]), int(match[2]) + 1 if match[2] else len(data)
            elif match[2]:
                start = max(len(data) - int(match[2]), 0)
            end = min(end, len(data))
            if start >= len(data) and len(data) > 0:
                raise _HttpError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{max(end - 1, start)}/{len(data)}"
        body = data[start:end]
        return _Response(status, b"" if ctx.method == "HEAD" else body, headers, content_length=len(body))


@dataclass
class _Context:
    hub: HubServer
    method: str
    raw_path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    user: str | None | _InvalidToken = None
    lfs: bool = False

    def json(self) -> dict:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except json.JSONDecodeError as err:
            raise _HttpError(400, f"Invalid JSON body: {err}") from None
        if not isinstance(value, dict):
            raise _HttpError(400, "The JSON body must be an object")
        return value


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, hub: HubServer):
        self.hub = hub
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self):
        connection, address = super().get_request()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real client expects
    server_version = "FakeHub/1.0"
    timeout = 60

    def _dispatch(self) -> None:
        body = self._read_body()  # always drain the body, or the next request on this connection is corrupted
        response, record = self.server.hub._handle(self.command, self.path, self.headers, body)
        self.send_response(response.status)
        length = response.content_length if response.content_length is not None else len(response.body)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)
        logger.debug("%s %s -> %d%s", record.method, record.path, record.status, " (LFS)" if record.lfs else "")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def log_message(self, format: str, *args) -> None:
        logger.debug("fake-hub %s - %s", self.address_string(), format % args)


# ---------------------------------------------------------------------------------------------------------------------
# Pointing huggingface_hub (and transformers / datasets, when imported) at the server
# ---------------------------------------------------------------------------------------------------------------------


def hub_environment(server: HubServer, hf_home: str | os.PathLike) -> dict[str, str]:
    """
    Environment variables that point a *new* process at `server` (use them for subprocesses).

    Args:
        server ([`HubServer`]): A started server.
        hf_home (`str` or `os.PathLike`): A scratch `HF_HOME` (cache, token, modules).

    Returns:
        `dict[str, str]`: `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_DISABLE_XET`, `HF_HOME`, ... to merge into `os.environ`.
    """
    return {
        "HF_ENDPOINT": server.url,
        "HF_TOKEN": server.token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }


def patch_hub_client(monkeypatch: pytest.MonkeyPatch, server: HubServer, hf_home: str | os.PathLike) -> None:
    """
    Points the already-imported `huggingface_hub` (and `transformers` / `datasets` if imported) at `server` for the
    duration of a test, and sets the matching environment variables for subprocesses. See the module docstring for
    why each attribute is needed. Everything is undone by `monkeypatch` at teardown.
    """
    from huggingface_hub import constants, hf_api

    hf_home = Path(hf_home)
    for name, value in hub_environment(server, hf_home).items():
        monkeypatch.setenv(name, value)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)

    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(hf_home / ".agent_harnesses.json"))
    monkeypatch.setattr(hf_api.api, "endpoint", server.url)

    if "transformers.utils.hub" in sys.modules:
        monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None)
    if "datasets.config" in sys.modules:
        datasets_config = sys.modules["datasets.config"]
        monkeypatch.setattr(datasets_config, "HF_ENDPOINT", server.url)
        monkeypatch.setattr(
            datasets_config, "HUB_DATASETS_URL", server.url + "/datasets/{repo_id}/resolve/{revision}/{path}"
        )
        for name, value in {
            "HF_HUB_OFFLINE": False,
            "HF_DATASETS_OFFLINE": False,
            "HF_DATASETS_CACHE": hf_home / "datasets",
            "DOWNLOADED_DATASETS_PATH": hf_home / "datasets" / "downloads",
            "EXTRACTED_DATASETS_PATH": hf_home / "datasets" / "downloads" / "extracted",
        }.items():
            monkeypatch.setattr(datasets_config, name, value, raising=False)


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """
    A started [`HubServer`] with `huggingface_hub` pointed at it (see [`patch_hub_client`]) and a scratch `HF_HOME`.

    The server is stopped and every patch undone after the test.
    """
    with HubServer() as server:
        patch_hub_client(monkeypatch, server, tmp_path_factory.mktemp("hf_home"))
        yield server
