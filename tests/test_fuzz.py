"""Property-based (hypothesis) tests filling the gaps of the existing fuzz tests.

Already covered elsewhere: block splitting of arbitrary Unicode documents (`test_corpus.py`), `find_answer_spans`
against brute force (`test_retrieval_realm.py`), masks never on [CLS]/[SEP]/padding for random token ids and spans
(`test_data_collator.py`), sentence splitting and salient-span tagging of random text (`test_masking.py`).

Added here:
- `batch_encode_candidates` of both tokenizers on arbitrary Unicode, empty and very long candidates, with and without
  a second segment: no crash, shapes `(batch, candidates, max_length)`, special tokens and segment ids in place, the
  same ids as encoding each candidate alone; without truncation, too long inputs raise a `ValueError` naming
  `max_length`;
- reader inputs built by `RealmRetriever.encode_candidates`: every answer label lies inside the evidence block
  (never in the question, on a special token or on padding), spells an answer, and no occurrence in the kept part of
  the block is missed;
- salient-span masking end to end from random text (tagger, then collator): masks never cover a special token or
  padding, and a masked salient span is one of the tagged spans.
"""

import functools
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from realm_hf import DataCollatorForRealmPreTraining, RealmTokenizer, RealmTokenizerFast
from realm_hf.demo.job import build_tokenizer
from realm_hf.retrieval.index import RealmIndex
from realm_hf.retrieval.retriever import RealmRetriever
from realm_hf.training.masking import _tag_batch
from realm_hf.training.taggers import RuleBasedTagger


REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"
REAL_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "bert_uncased_vocab" / "vocab.txt"
SPECIAL_STRINGS = ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")

# Arbitrary Unicode (no lone surrogates, which no tokenizer input can hold), with a bias towards words and spaces.
TEXT = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.text(alphabet=st.sampled_from("abc paris france the of ,.?!\u00e9\u4e2d\u0301\t\n"), max_size=60),
)
LONG_TEXT = st.builds(lambda word, n: (word + " ") * n, st.sampled_from(["paris", "the", "\u00e9t\u00e9", "x"]),
                      st.integers(100, 600))  # fmt: skip
CANDIDATE = st.one_of(TEXT, TEXT, TEXT, st.just(""), LONG_TEXT)


@functools.cache
def load_tokenizer(kind: str, vocab: str):
    cls = RealmTokenizerFast if kind == "fast" else RealmTokenizer
    if vocab == "fixture":
        return cls.from_pretrained(str(REFERENCE / "openqa" / "safetensors"))
    # (In transformers 5 the fast constructor takes `vocab=`; `vocab_file=` would be ignored without an error.)
    return cls.from_pretrained(str(REAL_VOCAB.parent), do_lower_case=True)


VOCABS = ["fixture", pytest.param("bert", marks=pytest.mark.skipif(not REAL_VOCAB.is_file(), reason="no BERT vocab"))]


@st.composite
def candidate_batches(draw):
    batch_size, num_candidates = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    text = [[draw(CANDIDATE) for _ in range(num_candidates)] for _ in range(batch_size)]
    pair = None
    if draw(st.booleans()):
        pair = [[draw(CANDIDATE) for _ in range(num_candidates)] for _ in range(batch_size)]
    return text, pair


def _flat(texts):
    return [t for example in texts for t in example]


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("kind", ["fast", "slow"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=candidate_batches(), max_length=st.integers(5, 48), return_tensors=st.sampled_from(["np", "pt", None]))
def test_batch_encode_candidates_properties(kind, vocab, batch, max_length, return_tensors):
    tokenizer = load_tokenizer(kind, vocab)
    assert tokenizer(["paris"], add_special_tokens=False)["input_ids"][0] != [tokenizer.unk_token_id]  # a real vocab
    text, pair = batch
    # A literal "[SEP]" in the text is the special token (as in BERT): the layout checks below assume plain text.
    assume(not any(s in t for t in _flat(text) + _flat(pair or []) for s in SPECIAL_STRINGS))
    kwargs = {"text_pair": pair} if pair is not None else {}
    encoded = tokenizer.batch_encode_candidates(
        text, max_length=max_length, truncation=True, return_tensors=return_tensors, **kwargs
    )
    shape = (len(text), len(text[0]), max_length)
    arrays = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        value = encoded[key]
        if return_tensors == "pt":
            assert isinstance(value, torch.Tensor)
        elif return_tensors == "np":
            assert isinstance(value, np.ndarray)
        arrays[key] = np.asarray(value.tolist() if return_tensors == "pt" else value, dtype=np.int64)
        assert arrays[key].shape == shape, key
    ids, mask, types = arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"]
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    for b in range(shape[0]):
        for c in range(shape[1]):
            row, row_mask, row_types = ids[b, c], mask[b, c], types[b, c]
            length = int(row_mask.sum())
            # Attention on a prefix, padding after it.
            assert (row_mask[:length] == 1).all() and (row_mask[length:] == 0).all()
            assert (row[length:] == pad).all() and (row_types[length:] == 0).all()
            # [CLS] first, [SEP] closing each segment, nowhere else.
            assert row[0] == cls and row[length - 1] == sep
            seps = np.flatnonzero(row[:length] == sep)
            assert len(seps) == (2 if pair is not None else 1)
            assert (row[1:length] != cls).all() and (row[:length] != pad).all()
            # Segment ids: 0 up to the first [SEP], 1 for the second segment.
            assert (row_types[: seps[0] + 1] == 0).all() and (row_types[seps[0] + 1 : length] == 1).all()
            # The same ids as encoding the candidate alone.
            args = ([text[b][c]],) if pair is None else ([text[b][c]], [pair[b][c]])
            alone = tokenizer(*args, max_length=max_length, truncation=True, padding="max_length")
            assert row.tolist() == alone["input_ids"][0]


@pytest.mark.parametrize("kind", ["fast", "slow"])
@settings(max_examples=25, deadline=None)
@given(batch=candidate_batches(), max_length=st.integers(5, 48))
def test_batch_encode_candidates_without_truncation_fits_or_names_max_length(kind, batch, max_length):
    tokenizer = load_tokenizer(kind, "fixture")
    text, pair = batch
    kwargs = {"text_pair": pair} if pair is not None else {}
    try:
        encoded = tokenizer.batch_encode_candidates(text, max_length=max_length, return_tensors="np", **kwargs)
    except ValueError as error:
        assert "max_length" in str(error)
        return
    assert encoded["input_ids"].shape == (len(text), len(text[0]), max_length)


LATIN_TEXT = st.text(alphabet=st.characters(max_codepoint=0x17F, blacklist_categories=("Cs", "Cn", "Co", "Cc")),
                     max_size=60)  # fmt: skip


@pytest.mark.parametrize("vocab", VOCABS)
@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.lists(LATIN_TEXT, min_size=2, max_size=2), min_size=1, max_size=2))
def test_slow_and_fast_candidates_agree_on_latin_text(vocab, texts):
    """Same ids from both tokenizers on Latin text. (Beyond it they can differ, as BERT's slow and fast tokenizers
    do: e.g. U+1DF6, a combining mark, is [UNK] for the fast one and dropped by the slow one.)"""
    fast, slow = load_tokenizer("fast", vocab), load_tokenizer("slow", vocab)
    a = fast.batch_encode_candidates(texts, max_length=40, truncation=True, return_tensors="np")
    b = slow.batch_encode_candidates(texts, max_length=40, truncation=True, return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(a[key], b[key])


# ------------------------------------------------------------------------------------------------------------------
# Reader inputs: answer labels inside the evidence block
# ------------------------------------------------------------------------------------------------------------------

DIGIT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "1", "2", "3"]
CONTENT_IDS = st.integers(5, 7)  # "1", "2", "3": small alphabet, many answer occurrences


@pytest.fixture(scope="module")
def digit_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits")
    return build_tokenizer(DIGIT_VOCAB, path)


@functools.lru_cache(maxsize=64)
def _retriever(blocks: tuple[tuple[int, ...], ...], tokenizer) -> RealmRetriever:
    corpus = datasets.Dataset.from_dict(
        {"title": [""] * len(blocks), "text": [" ".join(map(str, b)) for b in blocks],
         "token_ids": [list(b) for b in blocks]}
    )  # fmt: skip
    embeddings = np.eye(len(blocks), 4, dtype=np.float32)
    return RealmRetriever(RealmIndex.build(corpus, embeddings, show_progress=False), tokenizer)


@st.composite
def reader_cases(draw):
    blocks = draw(st.lists(st.lists(CONTENT_IDS, max_size=20).map(tuple), min_size=1, max_size=5).map(tuple))
    batch_size, k = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    block_ids = draw(st.lists(st.lists(st.integers(0, len(blocks) - 1), min_size=k, max_size=k),
                              min_size=batch_size, max_size=batch_size))  # fmt: skip
    questions = draw(st.lists(st.lists(CONTENT_IDS, max_size=12), min_size=batch_size, max_size=batch_size))
    answers = draw(st.lists(st.lists(st.lists(CONTENT_IDS, min_size=1, max_size=3), max_size=3),
                            min_size=batch_size, max_size=batch_size))  # fmt: skip
    num_read = draw(st.integers(1, k))
    max_length = draw(st.integers(4, 30))
    return blocks, np.asarray(block_ids), questions, answers, num_read, max_length


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=reader_cases())
def test_answer_labels_lie_inside_the_evidence_block(digit_tokenizer, case):
    blocks, block_ids, questions, answers, num_read, max_length = case
    retriever = _retriever(blocks, digit_tokenizer)
    batch = retriever.encode_candidates(block_ids, questions, answers, num_read=num_read, max_length=max_length)
    ids, block_mask, types = batch["input_ids"].numpy(), batch["block_mask"].numpy(), batch["token_type_ids"].numpy()
    starts, ends, has_answers = batch["start_positions"].numpy(), batch["end_positions"].numpy(), batch["has_answers"]
    assert ids.shape[:2] == (len(questions), num_read) and ids.shape[2] <= max_length
    assert starts.shape == ends.shape and starts.shape[:2] == ids.shape[:2]
    special = {digit_tokenizer.cls_token_id, digit_tokenizer.sep_token_id, digit_tokenizer.pad_token_id}
    for b in range(len(questions)):
        for j in range(num_read):
            segment = np.flatnonzero(block_mask[b, j])
            # The block segment: after [CLS] question [SEP], closed by [SEP], never a special token.
            assert not any(int(t) in special for t in ids[b, j][block_mask[b, j]])
            assert (types[b, j][block_mask[b, j]] == 1).all()
            if segment.size:
                assert ids[b, j, segment[0] - 1] == digit_tokenizer.sep_token_id
                assert ids[b, j, segment[-1] + 1] == digit_tokenizer.sep_token_id
                assert (np.diff(segment) == 1).all()
            labelled = set()
            for s, e in zip(starts[b, j], ends[b, j]):
                if s < 0:
                    assert e < 0
                    continue
                assert 0 <= s <= e < ids.shape[2]
                assert block_mask[b, j, s : e + 1].all(), "an answer label leaves the evidence block"
                assert ids[b, j, s : e + 1].tolist() in answers[b]
                labelled.add((int(s), int(e)))
            # Every occurrence of an answer in the kept block is labelled.
            expected = {
                (int(segment[0]) + i, int(segment[0]) + i + len(a) - 1)
                for a in answers[b]
                for i in range(segment.size - len(a) + 1)
                if ids[b, j, segment[0] + i : segment[0] + i + len(a)].tolist() == a
            }
            assert labelled == expected
            assert bool(has_answers[b, j]) == bool(expected)


# ------------------------------------------------------------------------------------------------------------------
# Salient-span masking from random text
# ------------------------------------------------------------------------------------------------------------------

WORDS = st.sampled_from(["Paris", "France", "Alan", "Turing", "the", "of", "1912", "in", "was", "born", "London", "."])
SENTENCE = st.one_of(
    st.lists(WORDS, max_size=25).map(" ".join),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60),
)


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("words")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "paris", "france", "alan", "turing", "the", "of", "19",
             "##12", "in", "was", "born", "london", ".", "1", "2"]  # fmt: skip
    return build_tokenizer(vocab, path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(SENTENCE, min_size=1, max_size=4), max_length=st.integers(3, 40), seed=st.integers(0, 2**16))
def test_salient_span_masking_from_random_text(word_tokenizer, texts, max_length, seed):
    # `tag_salient_spans` runs this function with `Dataset.map`; called directly to keep the test fast.
    tagged = _tag_batch({"text": texts}, list(range(len(texts))), tokenizer=word_tokenizer, tagger=RuleBasedTagger(),
                        text_column="text", doc_id_column=None)  # fmt: skip
    examples = [
        {"token_ids": ids, "salient_spans": spans, "doc_id": doc_id}
        for ids, spans, doc_id in zip(tagged["token_ids"], tagged["salient_spans"], tagged["doc_id"])
        if len(ids) > 0
    ]
    assume(examples)
    collator = DataCollatorForRealmPreTraining(word_tokenizer, masking="salient_span", max_length=max_length,
                                               seed=seed)  # fmt: skip
    batch = collator(examples)
    ids, labels, masked = batch["input_ids"], batch["labels"], batch["mlm_mask"].bool()
    # [UNK] stands for a word of the text and may be masked; the others never are.
    special = torch.tensor([word_tokenizer.cls_token_id, word_tokenizer.sep_token_id, word_tokenizer.pad_token_id,
                            word_tokenizer.mask_token_id])  # fmt: skip
    for i, example in enumerate(examples):
        n = min(len(example["token_ids"]), max_length - 2)
        original = [word_tokenizer.cls_token_id, *example["token_ids"][:n], word_tokenizer.sep_token_id]
        row_masked = masked[i]
        # Masks never on [CLS], [SEP], padding, nor on a position whose original token is special.
        assert not row_masked[0] and not row_masked[n + 1 :].any()
        assert not torch.isin(labels[i][row_masked], special).any()
        assert labels[i][row_masked].tolist() == [original[p] for p in torch.nonzero(row_masked).squeeze(1).tolist()]
        assert (labels[i][~row_masked] == -100).all()
        assert ids[i, 0] == word_tokenizer.cls_token_id and ids[i, n + 1] == word_tokenizer.sep_token_id
        if n > 0:
            assert row_masked.any()
        fitting = {(s, e) for s, e in example["salient_spans"] if 0 <= s < e <= n}
        if fitting:  # the masked positions are exactly one tagged span (shifted by [CLS])
            positions = torch.nonzero(row_masked).squeeze(1).tolist()
            assert (positions[0] - 1, positions[-1]) in fitting and len(positions) == positions[-1] - positions[0] + 1
