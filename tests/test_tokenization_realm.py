"""RealmTokenizer / RealmTokenizerFast: the original tests' values and the reference's batch_encode_candidates."""

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from realm_hf import RealmTokenizer, RealmTokenizerFast


REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"
BERT_TEST_VOCAB = "[UNK] [CLS] [SEP] [PAD] [MASK] want ##want ##ed wa un runn ##ing , low lowest".split()


@pytest.fixture(scope="module")
def test_vocab_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab")
    (path / "vocab.txt").write_text("\n".join(BERT_TEST_VOCAB) + "\n")
    return path


@pytest.mark.parametrize("tokenizer_class", [RealmTokenizer, RealmTokenizerFast])
def test_original_wordpiece_values(test_vocab_dir, tokenizer_class):
    tokenizer = tokenizer_class.from_pretrained(str(test_vocab_dir))
    tokens = tokenizer.tokenize("UNwant\u00e9d,running")
    assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tokenizer.convert_tokens_to_ids(tokens) == [9, 6, 7, 12, 10, 11]


@pytest.mark.parametrize("tokenizer_class", [RealmTokenizer, RealmTokenizerFast])
def test_batch_encode_candidates_matches_reference(tokenizer_class):
    expected = json.loads((REFERENCE / "tokenizer" / "batch_encode_candidates.json").read_text())
    tokenizer = tokenizer_class.from_pretrained(str(REFERENCE / "openqa" / "safetensors"))
    batch = tokenizer.batch_encode_candidates(expected["text"], max_length=expected["max_length"], return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].shape == (2, 2, 10)
        np.testing.assert_array_equal(batch[key], np.asarray(expected[key]))


def test_batch_encode_candidates_bad_input():
    tokenizer = RealmTokenizerFast.from_pretrained(str(REFERENCE / "openqa" / "safetensors"))
    with pytest.raises(ValueError, match="max_length"):
        tokenizer.batch_encode_candidates([["a", "b"]])
    with pytest.raises(ValueError, match="same number of candidates"):
        tokenizer.batch_encode_candidates([["a", "b"], ["c"]], max_length=8)
    with pytest.raises(ValueError, match="longer than max_length"):
        tokenizer.batch_encode_candidates([["paris is the capital of france"]], max_length=4)


def test_hub_style_tokenizer_config_naming_realm_tokenizer_loads():
    """The published repos' tokenizer_config.json says "tokenizer_class": "RealmTokenizer" and has no tokenizer.json."""
    folder = REFERENCE / "openqa" / "legacy_bin"
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "RealmTokenizer"
    assert not (folder / "tokenizer.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert isinstance(tokenizer, (RealmTokenizer, RealmTokenizerFast))
    assert tokenizer("paris").input_ids == [2, 26, 3]


def test_fast_tokenizer_reads_a_vocab_file(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    direct = RealmTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    loaded = RealmTokenizerFast.from_pretrained(str(tmp_path))
    assert len(direct) == len(loaded) == len(vocab)
    assert direct("hello world").input_ids == loaded("hello world").input_ids == [2, 5, 6, 3]
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        RealmTokenizerFast(vocab_file=str(tmp_path / "empty.txt"))


def test_from_pretrained_without_a_vocabulary_raises(tmp_path):
    with pytest.raises(ValueError, match="no vocab.txt or tokenizer.json was found"):
        RealmTokenizerFast.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="needs a vocabulary"):
        RealmTokenizerFast()


def test_a_directory_saved_by_the_fast_tokenizer_loads_with_both_classes(test_vocab_dir, tmp_path):
    fast = RealmTokenizerFast.from_pretrained(test_vocab_dir)
    fast.save_pretrained(tmp_path)
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8") == (Path(test_vocab_dir) / "vocab.txt").read_text(
        encoding="utf-8"
    )
    text = "unwanted running lowest"
    for cls in (RealmTokenizer, RealmTokenizerFast):
        reloaded = cls.from_pretrained(tmp_path)
        assert reloaded(text).input_ids == fast(text).input_ids, cls.__name__
