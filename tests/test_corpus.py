"""Tests for `realm_hf.retrieval.corpus`: documents -> evidence blocks."""

import functools
import logging
import string
from pathlib import Path

import datasets
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import BertTokenizerFast

from realm_hf.retrieval.corpus import (
    NUM_BLOCK_SPECIAL_TOKENS,
    block_output_features,
    sentence_boundaries,
    split_documents_into_blocks,
    split_sentences,
    tokenize_blocks,
)


REAL_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "bert_uncased_vocab" / "vocab.txt"
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "alan",
    "turing",
    "was",
    "born",
    "in",
    "london",
    "math",
    "##ematic",
    "##ian",
]


def _tiny_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return specials + WORDS + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(_tiny_vocab()) + "\n", encoding="utf-8")
    # transformers 5 ignores `vocab_file=`; the vocabulary argument is `vocab` (a path or a dict).
    tok = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)
    assert len(tok) == len(_tiny_vocab())
    return tok


def _docs(**columns) -> datasets.Dataset:
    return datasets.Dataset.from_dict(columns)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _check_blocks(blocks: datasets.Dataset, docs: datasets.Dataset, tokenizer, max_block_length: int) -> None:
    """Invariants: length limit, doc order, titles, and no wordpiece lost or duplicated."""
    doc_ids = blocks["doc_id"]
    assert doc_ids == sorted(doc_ids)
    for row in blocks:
        assert NUM_BLOCK_SPECIAL_TOKENS + len(row["title_token_ids"]) + len(row["token_ids"]) <= max_block_length
        assert len(row["token_ids"]) > 0
    by_doc: dict[int, list[int]] = {}
    for doc_id, ids in zip(doc_ids, blocks["token_ids"]):
        by_doc.setdefault(doc_id, []).extend(ids)
    for doc_id, doc in enumerate(docs):
        expected = _ids(tokenizer, doc["text"])
        assert by_doc.get(doc_id, []) == expected
    for row in blocks:
        source = docs[row["doc_id"]]
        assert row["text"] in source["text"]


def test_blocks_obey_length_limit_and_keep_every_token(tokenizer):
    sentence = "Alan Turing was born in London. The cat sat on the mat! "
    docs = _docs(title=["Alan Turing", "Cats", "x"], text=[sentence * 12, "The cat sat.", "math" * 5])
    blocks = split_documents_into_blocks(docs, tokenizer, max_block_length=32)
    assert len(blocks) > 3
    _check_blocks(blocks, docs, tokenizer, 32)
    assert blocks.features == block_output_features()
    first = blocks[0]
    assert first["title"] == "Alan Turing"
    assert first["title_token_ids"] == _ids(tokenizer, "Alan Turing")
    assert set(blocks["doc_id"]) == {0, 1, 2}


def test_greedy_packing_respects_sentences(tokenizer):
    # Each sentence "the cat sat on the mat ." is 7 wordpieces; title "cat" is 1; budget = 20 - 3 - 1 = 16.
    text = " ".join(["The cat sat on the mat."] * 5)
    blocks = split_documents_into_blocks(_docs(title=["cat"], text=[text]), tokenizer, max_block_length=20)
    assert [len(ids) for ids in blocks["token_ids"]] == [14, 14, 7]
    assert blocks["text"][0] == "The cat sat on the mat. The cat sat on the mat."
    for row in blocks:  # sentence-aligned blocks re-tokenize to their stored ids
        assert _ids(tokenizer, row["text"]) == row["token_ids"]


def test_overlong_sentence_is_cut_at_word_boundaries(tokenizer):
    text = " ".join(["mathematician"] * 10)  # 3 wordpieces per word, one 30-wordpiece sentence
    blocks = split_documents_into_blocks(_docs(title=[""], text=[text]), tokenizer, max_block_length=3 + 8)
    lengths = [len(ids) for ids in blocks["token_ids"]]
    assert lengths == [6, 6, 6, 6, 6]  # 8 would split a word; cut before the word instead
    assert all(t == "mathematician mathematician" for t in blocks["text"])
    _check_blocks(blocks, _docs(title=[""], text=[text]), tokenizer, 11)


def test_overlong_word_is_hard_cut(tokenizer):
    text = "abcdefghijklmnopqrstuvwxyz"  # one word, 26 wordpieces (a ##b ##c ...)
    docs = _docs(title=[""], text=[text])
    blocks = split_documents_into_blocks(docs, tokenizer, max_block_length=3 + 10)
    assert [len(ids) for ids in blocks["token_ids"]] == [10, 10, 6]
    _check_blocks(blocks, docs, tokenizer, 13)


def test_long_title_is_truncated(tokenizer):
    title = " ".join(["cat"] * 40)
    blocks = split_documents_into_blocks(_docs(title=[title], text=["the mat."]), tokenizer, max_block_length=23)
    assert len(blocks[0]["title_token_ids"]) == 10
    assert blocks[0]["title"] == " ".join(["cat"] * 10)


def test_doc_id_column_is_used(tokenizer):
    docs = _docs(title=["a", "b"], text=["the cat.", "the mat."], doc_id=[17, 42], url=["u1", "u2"])
    blocks = split_documents_into_blocks(docs, tokenizer)
    assert blocks["doc_id"] == [17, 42]
    assert blocks.column_names == ["title", "text", "doc_id", "title_token_ids", "token_ids"]


def test_sentence_boundaries():
    text = 'He said "hi." Then left! What? Yes.\nNew line 3.5 stays'
    starts = sentence_boundaries(text).tolist()
    assert [text[s:][:4] for s in starts] == ["Then", "What", "Yes.", "New "]


def test_empty_documents_are_skipped_with_a_warning(tokenizer, caplog):
    docs = _docs(title=["a", "b", "c"], text=["the cat.", "", "   \n "])
    with caplog.at_level(logging.WARNING, logger="realm_hf.retrieval.corpus"):
        blocks = split_documents_into_blocks(docs, tokenizer)
    assert blocks["doc_id"] == [0]
    assert "Skipped 2 empty documents out of 3" in caplog.text


def test_all_empty_documents_error(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        split_documents_into_blocks(_docs(title=["a", "b"], text=["", " "]), tokenizer)


def test_empty_corpus_errors(tokenizer):
    empty = datasets.Dataset.from_dict({"title": [], "text": []}, features=_string_features())
    with pytest.raises(ValueError, match="empty"):
        split_documents_into_blocks(empty, tokenizer)


def _string_features() -> datasets.Features:
    return datasets.Features({"title": datasets.Value("string"), "text": datasets.Value("string")})


def test_missing_column_errors(tokenizer):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['title'\]"):
        split_documents_into_blocks(_docs(text=["the cat."]), tokenizer)


def test_non_string_column_errors(tokenizer):
    with pytest.raises(ValueError, match="'text' must contain strings"):
        split_documents_into_blocks(_docs(title=["a"], text=[123]), tokenizer)


def test_none_text_errors(tokenizer):
    with pytest.raises(ValueError, match="Document 1: column 'text' is missing"):
        split_documents_into_blocks(_docs(title=["a", "b"], text=["the cat.", None]), tokenizer)


def test_invalid_utf8_bytes_error(tokenizer):
    docs = _docs(title=["a", "b"], text=[b"the cat.", b"\xff\xfe bad"])
    with pytest.raises(ValueError, match="Document 1: column 'text' holds bytes that are not valid UTF-8"):
        split_documents_into_blocks(docs, tokenizer)


def test_valid_utf8_bytes_are_decoded(tokenizer):
    blocks = split_documents_into_blocks(_docs(title=[b"cat"], text=["the mat, café.".encode()]), tokenizer)
    assert blocks[0]["title"] == "cat"
    assert blocks[0]["text"] == "the mat, café."


def test_bad_arguments(tokenizer):
    docs = _docs(title=["a"], text=["the cat."])
    with pytest.raises(ValueError, match="max_block_length"):
        split_documents_into_blocks(docs, tokenizer, max_block_length=3)
    with pytest.raises(ValueError, match="DatasetDict"):
        split_documents_into_blocks(datasets.DatasetDict({"train": docs}), tokenizer)
    with pytest.raises(TypeError):
        split_documents_into_blocks({"title": ["a"], "text": ["b"]}, tokenizer)


def test_jsonl_and_parquet_sources_and_num_proc(tokenizer, tmp_path):
    docs = _docs(
        title=[f"doc {i}" for i in range(6)],
        text=["Alan Turing was born in London. " * (i + 1) for i in range(6)],
    )
    docs.to_json(tmp_path / "docs.jsonl")
    docs.to_parquet(tmp_path / "docs.parquet")
    reference = split_documents_into_blocks(docs, tokenizer, max_block_length=24)
    from_json = datasets.Dataset.from_json(str(tmp_path / "docs.jsonl"))
    from_parquet = datasets.Dataset.from_parquet(str(tmp_path / "docs.parquet"))
    for source, num_proc in ((from_json, None), (from_parquet, 2)):
        blocks = split_documents_into_blocks(source, tokenizer, max_block_length=24, num_proc=num_proc)
        assert blocks.to_dict() == reference.to_dict()
    _check_blocks(reference, docs, tokenizer, 24)


def test_tokenize_blocks(tokenizer):
    blocks = tokenize_blocks(_docs(text=["the cat.", "mat"]), tokenizer)
    assert blocks["token_ids"] == [_ids(tokenizer, "the cat."), _ids(tokenizer, "mat")]
    assert blocks["title_token_ids"] == [[], []]


@pytest.mark.skipif(not REAL_VOCAB.is_file(), reason="shared BERT vocabulary not available")
def test_real_bert_vocab_blocks_are_decode_consistent():
    tokenizer = _real_tokenizer()
    text = (
        "Alan Mathison Turing (23 June 1912 – 7 June 1954) was an English mathematician, computer scientist, "
        "logician, cryptanalyst, philosopher and theoretical biologist. He was highly influential in the "
        "development of theoretical computer science! Born in Maida Vale, London, Turing was raised in southern "
        "England. Café crème, naïve façade?\n"
    ) * 6
    docs = _docs(title=["Alan Turing"], text=[text])
    blocks = split_documents_into_blocks(docs, tokenizer, max_block_length=64)
    _check_blocks(blocks, docs, tokenizer, 64)
    for row in blocks:
        assert tokenizer(row["text"], add_special_tokens=False)["input_ids"] == row["token_ids"]


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # Arrow strings cannot hold lone surrogates
    max_size=200,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    documents=st.lists(st.tuples(st.text(max_size=30), _TEXT), min_size=1, max_size=5),
    max_block_length=st.integers(min_value=4, max_value=40),
)
def test_random_unicode_documents(tokenizer, documents, max_block_length):
    docs = _docs(title=[t for t, _ in documents], text=[x for _, x in documents])
    if not any(_ids(tokenizer, x) for _, x in documents):
        with pytest.raises(ValueError, match="empty"):
            split_documents_into_blocks(docs, tokenizer, max_block_length=max_block_length, keep_in_memory=True)
        return
    blocks = split_documents_into_blocks(docs, tokenizer, max_block_length=max_block_length, keep_in_memory=True)
    _check_blocks(blocks, docs, tokenizer, max_block_length)
    assert all(np.asarray(ids).dtype.kind == "i" for ids in blocks["token_ids"])


@pytest.mark.skipif(not REAL_VOCAB.is_file(), reason="shared BERT vocabulary not available")
@settings(max_examples=15, deadline=None)
@given(documents=st.lists(st.tuples(st.text(max_size=30), _TEXT), min_size=1, max_size=4))
def test_random_unicode_documents_real_vocab(documents):
    tokenizer = _real_tokenizer()
    docs = _docs(title=[t for t, _ in documents], text=[x for _, x in documents])
    if not any(_ids(tokenizer, x) for _, x in documents):
        return
    blocks = split_documents_into_blocks(docs, tokenizer, max_block_length=16, keep_in_memory=True)
    _check_blocks(blocks, docs, tokenizer, 16)


@functools.lru_cache(maxsize=1)
def _real_tokenizer() -> BertTokenizerFast:
    return BertTokenizerFast(vocab=str(REAL_VOCAB), do_lower_case=True)


def test_block_packing_and_masking_split_sentences_alike():
    text = "Dr. Smith met J. R. R. Tolkien in Oxford. They talked about St. Giles for an hour!  Then he left."
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == [
        "Dr. Smith met J. R. R. Tolkien in Oxford.", "They talked about St. Giles for an hour!", "Then he left.",
    ]  # fmt: skip
    assert sentence_boundaries(text).tolist() == [start for start, _ in spans[1:]]
