"""Shared fixtures: tiny REALM configs, tokenizers and corpora built in-process (no network)."""

import copy
import json
from pathlib import Path

import pytest

from realm_hf import RealmConfig, RealmTokenizerFast

from .hub_server import hub_server  # noqa: F401  (the local Hub server fixture, for every test module)
from .utils import TINY_VOCAB, tiny_config_kwargs


REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def tiny_config() -> RealmConfig:
    return RealmConfig(**tiny_config_kwargs())


@pytest.fixture(scope="session")
def _tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    (path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def _tiny_tokenizer(_tokenizer_dir) -> RealmTokenizerFast:
    return RealmTokenizerFast.from_pretrained(str(_tokenizer_dir))


@pytest.fixture
def tiny_tokenizer(_tiny_tokenizer) -> RealmTokenizerFast:
    return copy.deepcopy(_tiny_tokenizer)


@pytest.fixture
def tokenizer_dir(_tokenizer_dir) -> Path:
    return _tokenizer_dir


@pytest.fixture(scope="session")
def knowledge():
    """A small generated world (16 people, 5 cities) for pre-training tests."""
    from realm_hf.demo.synthetic import make_synthetic_knowledge

    return make_synthetic_knowledge(num_people=16, num_cities=5, num_countries=3, seed=1)


@pytest.fixture(scope="session")
def synthetic_tokenizer(knowledge, tmp_path_factory):
    """The tokenizer of `knowledge`'s vocabulary (use `synthetic_config` for a model of it)."""
    from realm_hf.demo.job import build_tokenizer

    return build_tokenizer(knowledge.vocabulary(), tmp_path_factory.mktemp("synthetic_tokenizer"))


@pytest.fixture(scope="session")
def corpus(knowledge, synthetic_tokenizer):
    """`knowledge`'s documents as pre-tokenized blocks."""
    from realm_hf.retrieval.corpus import tokenize_blocks

    return tokenize_blocks(knowledge.documents, synthetic_tokenizer)


@pytest.fixture(scope="session")
def openqa_tokenizer() -> RealmTokenizerFast:
    """The tokenizer of the reference open-QA fixture."""
    return RealmTokenizerFast.from_pretrained(str(FIXTURES / "reference" / "openqa" / "safetensors"))


@pytest.fixture(scope="session")
def blocks() -> list[str]:
    """The block records of the reference open-QA fixture."""
    return json.loads((FIXTURES / "reference" / "openqa" / "blocks.json").read_text())
