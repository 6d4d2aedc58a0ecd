"""Shared fixtures: tiny REALM configs, tokenizers and corpora built in-process (no network)."""

import copy
import json
from pathlib import Path

import pytest

from realm_hf import RealmConfig, RealmTokenizerFast


REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

TINY_VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] the a an is was of in to and who what when where which capital city "
    "country born wrote paris france berlin germany rome italy alan turing computer scientist mathematician "
    "ada lovelace poet london england first second third fourth fifth record test question this , . ? "
    "##s ##ed ##ing"
).split()


def tiny_config_kwargs() -> dict:
    return {
        "vocab_size": 64,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "retriever_proj_size": 16,
        "span_hidden_size": 24,
        "max_span_width": 4,
        "num_candidates": 3,
        "reader_beam_size": 3,
        "searcher_beam_size": 5,
        "num_block_records": 8,
        "reader_seq_len": 32,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


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
def openqa_tokenizer() -> RealmTokenizerFast:
    """The tokenizer of the reference open-QA fixture."""
    return RealmTokenizerFast.from_pretrained(str(FIXTURES / "reference" / "openqa" / "safetensors"))


@pytest.fixture(scope="session")
def blocks() -> list[str]:
    """The block records of the reference open-QA fixture."""
    return json.loads((FIXTURES / "reference" / "openqa" / "blocks.json").read_text())
