"""Tests of `realm_hf.training.collators`: REALM pre-training masking and Inverse Cloze Task batches."""

import random

import datasets
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realm_hf.demo.job import build_tokenizer
from realm_hf.retrieval.formats import document_tower_inputs
from realm_hf.tokenization_realm import RealmTokenizerFast
from realm_hf.training.collators import (
    MAX_RANDOM_SPAN_LENGTH,
    DataCollatorForInverseClozeTask,
    DataCollatorForRealmPreTraining,
    prepare_ict_examples,
)
from realm_hf.training.masking import tag_salient_spans


VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] alan turing was born in london 1912 . , ! ? paris is big i love the city "
    "ada lovelace wrote a poem about he met it cost 12 % mathematics history of computer science"
).split()
CLS, SEP, PAD, MASK = 2, 3, 0, 4
NUM_SPECIAL = 5

suppress_fixture_check = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> RealmTokenizerFast:
    path = tmp_path_factory.mktemp("collator_tokenizer")
    tok = build_tokenizer(VOCAB, path)
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.mask_token_id) == (CLS, SEP, PAD, MASK)
    return tok


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _original_input_ids(batch, examples, max_length):
    """`[CLS] truncated tokens [SEP] [PAD]...` for every example."""
    original = torch.full_like(batch["input_ids"], PAD)
    for i, example in enumerate(examples):
        ids = list(example["token_ids"])[: max_length - 2]
        original[i, : len(ids) + 2] = torch.tensor([CLS, *ids, SEP])
    return original


def _check_pretraining_batch(batch, examples, collator):
    """Invariants every pre-training batch satisfies, whatever the masking mode."""
    input_ids, labels, mlm_mask = batch["input_ids"], batch["labels"], batch["mlm_mask"]
    bsz, seq_len = input_ids.shape
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "mlm_mask", "doc_ids"}
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels", "mlm_mask"):
        assert batch[key].shape == (bsz, seq_len)
    assert batch["doc_ids"].shape == (bsz,) and batch["doc_ids"].dtype == torch.long
    assert mlm_mask.dtype == torch.float32 and input_ids.dtype == labels.dtype == torch.long
    assert seq_len <= max(collator.max_length, 0) + (collator.pad_to_multiple_of or 1)
    assert (batch["token_type_ids"] == 0).all()
    original = _original_input_ids(batch, examples, collator.max_length)
    lengths = torch.tensor([min(len(e["token_ids"]), collator.max_length - 2) for e in examples])
    positions = torch.arange(seq_len).unsqueeze(0)
    real = (positions >= 1) & (positions <= lengths.unsqueeze(1))
    assert (batch["attention_mask"] == (positions < lengths.unsqueeze(1) + 2).long()).all()
    masked = mlm_mask.bool()
    # Masks never cover [CLS], [SEP] or padding; special positions are untouched.
    assert not (masked & ~real).any()
    assert (input_ids[~real] == original[~real]).all()
    assert (input_ids[:, 0] == CLS).all()
    # Labels are -100 exactly where nothing is masked and the original id where something is.
    assert (labels[~masked] == -100).all()
    assert (labels[masked] == original[masked]).all()
    # At least one masked token in every example with at least one real token.
    assert (masked.any(dim=1) == (lengths > 0)).all()
    return original, masked, lengths


# ----------------------------------------------------------------------------------------------------------------
# DataCollatorForRealmPreTraining: exact behaviour on hand-made sentences
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def sentence(tokenizer):
    token_ids = _ids(tokenizer, "alan turing was born in london in 1912 .")
    return {"token_ids": token_ids, "salient_spans": [[0, 2], [5, 6], [7, 8]], "doc_id": 11}


def test_salient_span_masks_exactly_one_span(tokenizer, sentence):
    chosen = set()
    for seed in range(40):
        collator = DataCollatorForRealmPreTraining(tokenizer, seed=seed)
        batch = collator([sentence])
        _check_pretraining_batch(batch, [sentence], collator)
        masked = torch.nonzero(batch["mlm_mask"][0]).squeeze(1).tolist()
        span = (masked[0] - 1, masked[-1])
        assert span in {(0, 2), (5, 6), (7, 8)} and masked == list(range(masked[0], masked[-1] + 1))
        # Every wordpiece of the span is [MASK] (no 80/10/10 in salient mode); the rest is untouched.
        expected = [CLS, *sentence["token_ids"], SEP]
        for position in masked:
            expected[position] = MASK
        assert batch["input_ids"][0].tolist() == expected
        assert batch["labels"][0].tolist() == [
            sentence["token_ids"][p - 1] if p in masked else -100 for p in range(len(expected))
        ]
        assert batch["doc_ids"].tolist() == [11]
        chosen.add(span)
    assert chosen == {(0, 2), (5, 6), (7, 8)}


def test_salient_span_truncation_drops_spans(tokenizer, sentence):
    collator = DataCollatorForRealmPreTraining(tokenizer, max_length=7, seed=0)  # 5 wordpieces fit
    for _ in range(10):
        batch = collator([sentence])
        assert batch["input_ids"].shape == (1, 7)
        assert batch["input_ids"][0].tolist() == [CLS, MASK, MASK, *sentence["token_ids"][2:5], SEP]
    assert collator.num_salient_fallbacks == 0


def test_salient_span_fallback_to_random_tokens(tokenizer, sentence):
    no_span = {**sentence, "salient_spans": []}
    too_long = {**sentence, "salient_spans": [[7, 8], [3, 3], [-1, 2], [6, 99]]}  # nothing valid after truncation
    collator = DataCollatorForRealmPreTraining(tokenizer, max_length=9, seed=0)
    batch = collator([no_span, too_long, sentence])
    _check_pretraining_batch(batch, [no_span, too_long, sentence], collator)
    assert collator.num_salient_fallbacks == 2 and collator.num_examples == 3
    masked = batch["mlm_mask"].bool()
    # Fallback rows are masked with [MASK] only.
    assert (batch["input_ids"][masked] == MASK).all()


def test_empty_sentence_and_padding(tokenizer, sentence):
    empty = {"token_ids": [], "salient_spans": [], "doc_id": 5}
    for masking in ("salient_span", "random_token", "random_span"):
        collator = DataCollatorForRealmPreTraining(tokenizer, masking=masking, seed=1, pad_to_multiple_of=8)
        batch = collator([empty, sentence])
        _check_pretraining_batch(batch, [empty, sentence], collator)
        assert batch["input_ids"].shape == (2, 16)
        assert batch["input_ids"][0].tolist() == [CLS, SEP] + [PAD] * 14
        assert batch["mlm_mask"][0].sum() == 0
        assert batch["doc_ids"].tolist() == [5, 11]


def test_random_token_statistics(tokenizer):
    rng = random.Random(0)
    examples = [
        {"token_ids": [rng.randrange(NUM_SPECIAL, len(VOCAB)) for _ in range(62)], "salient_spans": [], "doc_id": i}
        for i in range(200)
    ]
    collator = DataCollatorForRealmPreTraining(tokenizer, masking="random_token", seed=0)
    batch = collator(examples)
    original, masked, _ = _check_pretraining_batch(batch, examples, collator)
    assert 0.12 < masked.float().mean().item() * 64 / 62 < 0.18
    replaced = batch["input_ids"][masked]
    frac_mask = (replaced == MASK).float().mean().item()
    frac_same = (replaced == original[masked]).float().mean().item()
    assert 0.75 < frac_mask < 0.85 and 0.05 < frac_same < 0.16
    # Random replacements are never special tokens.
    assert (replaced[replaced != MASK] >= NUM_SPECIAL).all()
    # Unmasked positions are untouched.
    assert (batch["input_ids"][~masked] == original[~masked]).all()


def test_random_span_masking(tokenizer):
    examples = [{"token_ids": list(range(NUM_SPECIAL, NUM_SPECIAL + 40)), "doc_id": i} for i in range(50)]
    collator = DataCollatorForRealmPreTraining(tokenizer, masking="random_span", mean_span_length=3, seed=0)
    batch = collator(examples)
    original, masked, _ = _check_pretraining_batch(batch, examples, collator)
    assert (batch["input_ids"][masked] == MASK).all()
    assert (batch["input_ids"][~masked] == original[~masked]).all()
    counts = masked.sum(dim=1)
    assert (counts <= 6).all() and counts.float().mean() > 5  # round(0.15 * 40) = 6 wordpieces
    run_lengths = []
    for row in masked.int().tolist():
        run = 0
        for value in row + [0]:
            if value:
                run += 1
            elif run:
                run_lengths.append(run)
                run = 0
    assert max(run_lengths) <= MAX_RANDOM_SPAN_LENGTH and max(run_lengths) > 1


def test_deterministic_and_no_global_rng(tokenizer, sentence):
    examples = [sentence, {**sentence, "salient_spans": []}] * 4
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    for masking in ("salient_span", "random_token", "random_span"):
        first = DataCollatorForRealmPreTraining(tokenizer, masking=masking, seed=123)
        second = DataCollatorForRealmPreTraining(tokenizer, masking=masking, seed=123)
        for _ in range(3):
            a, b = first(examples), second(examples)
            assert all(torch.equal(a[k], b[k]) for k in a)
        unseeded = DataCollatorForRealmPreTraining(tokenizer, masking=masking)
        _check_pretraining_batch(unseeded(examples), examples, unseeded)
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state


def test_state_dict_round_trip(tokenizer, sentence, ict_example, tmp_path):
    examples = [sentence, {**sentence, "salient_spans": []}] * 4
    for masking in ("salient_span", "random_token", "random_span"):
        collator = DataCollatorForRealmPreTraining(tokenizer, masking=masking, seed=3)
        collator(examples)
        torch.save(collator.state_dict(), tmp_path / "state.pt")
        expected = [collator(examples) for _ in range(2)]
        resumed = DataCollatorForRealmPreTraining(tokenizer, masking=masking, seed=99)
        resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
        assert (resumed.num_examples, resumed.num_salient_fallbacks) == (8, 4 if masking == "salient_span" else 0)
        for batch in expected:
            assert all(torch.equal(batch[k], value) for k, value in resumed(examples).items())
    ict = DataCollatorForInverseClozeTask(tokenizer, seed=3)
    ict([ict_example] * 4)
    state = ict.state_dict()
    expected = ict([ict_example] * 4)
    resumed = DataCollatorForInverseClozeTask(tokenizer)
    resumed.load_state_dict(state)
    assert all(torch.equal(expected[k], value) for k, value in resumed([ict_example] * 4).items())


def test_dataloader_workers_get_distinct_streams(tokenizer, sentence, monkeypatch):
    collator = DataCollatorForRealmPreTraining(tokenizer, masking="random_token", seed=7)
    examples = [{**sentence, "token_ids": list(range(NUM_SPECIAL, 45))}] * 8
    main = collator(examples)["mlm_mask"]
    expected = DataCollatorForRealmPreTraining(tokenizer, masking="random_token", seed=8)(examples)["mlm_mask"]
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: type("Info", (), {"id": 1})())
    worker = collator(examples)["mlm_mask"]
    assert not torch.equal(main, worker)
    assert torch.equal(worker, expected)  # worker 1 re-seeds with seed + 1, once
    assert not torch.equal(collator(examples)["mlm_mask"], expected)


def test_inputs_from_dataset_formats(tokenizer):
    corpus = datasets.Dataset.from_dict(
        {"doc_id": [3, 4], "text": ["Alan Turing was born in London in 1912.", "It cost 12 %. Ada wrote a poem."]}
    )
    tagged = tag_salient_spans(corpus, tokenizer)
    collator = DataCollatorForRealmPreTraining(tokenizer, seed=0)
    for fmt in (None, "numpy", "torch"):
        rows = list(tagged.with_format(fmt))
        batch = collator(rows)
        _check_pretraining_batch(batch, [{"token_ids": list(r["token_ids"])} for r in rows], collator)
        assert batch["doc_ids"].tolist() == [3, 4, 4]


def test_pretraining_collator_validation(tokenizer):
    with pytest.raises(ValueError, match="masking"):
        DataCollatorForRealmPreTraining(tokenizer, masking="whole_word")
    with pytest.raises(ValueError, match="mlm_probability"):
        DataCollatorForRealmPreTraining(tokenizer, mlm_probability=0.0)
    with pytest.raises(ValueError, match="max_length"):
        DataCollatorForRealmPreTraining(tokenizer, max_length=2)
    with pytest.raises(ValueError, match="mean_span_length"):
        DataCollatorForRealmPreTraining(tokenizer, mean_span_length=0.5)
    with pytest.raises(ValueError, match="empty"):
        DataCollatorForRealmPreTraining(tokenizer)([])


# ----------------------------------------------------------------------------------------------------------------
# DataCollatorForRealmPreTraining: properties
# ----------------------------------------------------------------------------------------------------------------


@st.composite
def pretraining_examples(draw):
    examples = []
    for doc_id in range(draw(st.integers(1, 6))):
        n = draw(st.integers(0, 80))
        token_ids = draw(st.lists(st.integers(NUM_SPECIAL, len(VOCAB) - 1), min_size=n, max_size=n))
        spans = []
        for _ in range(draw(st.integers(0, 4))):
            start = draw(st.integers(-2, n + 1))
            spans.append([start, draw(st.integers(start - 1, n + 3))])
        examples.append({"token_ids": token_ids, "salient_spans": spans, "doc_id": doc_id})
    return examples


@suppress_fixture_check
@given(
    examples=pretraining_examples(),
    masking=st.sampled_from(["salient_span", "random_token", "random_span"]),
    max_length=st.integers(3, 70),
    mlm_probability=st.floats(0.01, 1.0),
    pad_to_multiple_of=st.sampled_from([None, 1, 8]),
    seed=st.integers(0, 2**32),
)
def test_pretraining_collator_property(
    tokenizer, examples, masking, max_length, mlm_probability, pad_to_multiple_of, seed
):
    collator = DataCollatorForRealmPreTraining(
        tokenizer,
        masking=masking,
        max_length=max_length,
        mlm_probability=mlm_probability,
        pad_to_multiple_of=pad_to_multiple_of,
        seed=seed,
    )
    batch = collator(examples)
    original, masked, lengths = _check_pretraining_batch(batch, examples, collator)
    if pad_to_multiple_of:
        assert batch["input_ids"].shape[1] % pad_to_multiple_of == 0
    if masking != "random_token":
        assert (batch["input_ids"][masked] == MASK).all()
        assert (batch["input_ids"][~masked] == original[~masked]).all()
    if masking == "salient_span":
        for i, example in enumerate(examples):
            n = int(lengths[i])
            valid = {(s, e) for s, e in example["salient_spans"] if 0 <= s < e <= n}
            if valid:
                positions = torch.nonzero(masked[i]).squeeze(1)
                assert (int(positions[0]) - 1, int(positions[-1])) in valid
                assert len(positions) == int(positions[-1]) - int(positions[0]) + 1


# ----------------------------------------------------------------------------------------------------------------
# Inverse Cloze Task
# ----------------------------------------------------------------------------------------------------------------


def test_prepare_ict_examples(tokenizer):
    blocks = datasets.Dataset.from_dict(
        {
            "title": ["Alan Turing", "Paris", "Ada Lovelace"],
            "text": ["Alan Turing was born in London. He met Ada!\n\x00", "Paris is big.", "Ada wrote a poem. It cost 12 %."],
            "doc_id": [10, 11, 12],
            "token_ids": [[1], [2], [3]],
        }
    )  # fmt: skip
    examples = prepare_ict_examples(blocks, tokenizer)
    assert examples.column_names == ["title_token_ids", "sentence_token_ids", "doc_id"]
    rows = examples.to_list()
    assert [row["doc_id"] for row in rows] == [10, 12]  # a single-sentence block is dropped
    assert rows[0]["title_token_ids"] == _ids(tokenizer, "Alan Turing")
    assert rows[0]["sentence_token_ids"] == [
        _ids(tokenizer, "Alan Turing was born in London."),
        _ids(tokenizer, "He met Ada!"),
    ]
    assert rows[1]["sentence_token_ids"] == [_ids(tokenizer, "Ada wrote a poem."), _ids(tokenizer, "It cost 12 %.")]
    no_title = prepare_ict_examples(blocks.remove_columns(["title", "doc_id"]), tokenizer, min_sentences=1)
    assert len(no_title) == 3 and no_title[1]["title_token_ids"] == []


@pytest.fixture
def ict_example():
    return {"title_token_ids": [20, 21], "sentence_token_ids": [[5, 6], [7], [8, 9, 10]]}


def test_ict_removes_or_keeps_query_sentence(tokenizer, ict_example):
    queries = set()
    for seed in range(20):
        removed = DataCollatorForInverseClozeTask(tokenizer, remove_sentence_probability=1.0, seed=seed)([ict_example])
        kept = DataCollatorForInverseClozeTask(tokenizer, remove_sentence_probability=0.0, seed=seed)([ict_example])
        query = removed["query_input_ids"][0].tolist()
        assert query[0] == CLS and query[-1] == SEP
        q = ict_example["sentence_token_ids"].index(query[1:-1])
        queries.add(q)
        body = [t for j, s in enumerate(ict_example["sentence_token_ids"]) if j != q for t in s]
        assert removed["block_input_ids"][0].tolist() == [CLS, 20, 21, SEP, *body, SEP]
        assert removed["block_token_type_ids"][0].tolist() == [0] * 4 + [1] * (len(body) + 1)
        assert kept["block_input_ids"][0].tolist() == [CLS, 20, 21, SEP, 5, 6, 7, 8, 9, 10, SEP]
        assert kept["block_attention_mask"].all() and removed["query_attention_mask"].all()
        assert removed["labels"].tolist() == [0]
    assert queries == {0, 1, 2}


def test_ict_batch_padding_truncation_and_labels(tokenizer, ict_example):
    single = {"title_token_ids": [], "sentence_token_ids": [[11, 12, 13, 14, 15]]}
    collator = DataCollatorForInverseClozeTask(
        tokenizer, query_max_length=4, block_max_length=8, remove_sentence_probability=1.0, seed=0
    )
    batch = collator([ict_example, single])
    assert batch["labels"].tolist() == [0, 1]
    assert batch["query_input_ids"].shape[1] <= 4 and batch["block_input_ids"].shape[1] <= 8
    # A single-sentence block keeps its sentence (nothing would be left); the query is truncated.
    assert batch["query_input_ids"][1].tolist() == [CLS, 11, 12, SEP]
    assert batch["block_input_ids"][1].tolist() == [CLS, SEP, 11, 12, 13, 14, 15, SEP]
    assert batch["block_token_type_ids"][1].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    padded = DataCollatorForInverseClozeTask(tokenizer, pad_to_multiple_of=8, seed=0)([ict_example, single])
    assert padded["query_input_ids"].shape[1] == 8 and padded["block_input_ids"].shape[1] == 16
    assert (padded["block_token_type_ids"][padded["block_attention_mask"] == 0] == 0).all()
    with pytest.raises(ValueError, match="no non-empty sentence"):
        collator([{"title_token_ids": [], "sentence_token_ids": [[]]}])


@pytest.mark.parametrize("block_max_length", [21, 22, 289])
def test_ict_blocks_are_laid_out_as_the_index_lays_them_out(tokenizer, block_max_length):
    """The ICT positive is the document-tower input the index embeds for the same title and body, odd lengths too
    (the title keeps `max_length // 2 - 2` tokens in both)."""
    title = list(range(NUM_SPECIAL, NUM_SPECIAL + 12)) * 20  # longer than any title budget
    sentences = [[NUM_SPECIAL + 1, NUM_SPECIAL + 2] * 40, [NUM_SPECIAL + 3] * 300]
    collator = DataCollatorForInverseClozeTask(
        tokenizer, block_max_length=block_max_length, remove_sentence_probability=0.0, seed=0
    )
    batch = collator([{"title_token_ids": title, "sentence_token_ids": sentences}])
    expected = document_tower_inputs(
        [title], [[t for s in sentences for t in s]], CLS, SEP, PAD, max_length=block_max_length
    )
    assert batch["block_input_ids"].tolist() == expected["input_ids"].tolist()
    assert batch["block_token_type_ids"].tolist() == expected["token_type_ids"].tolist()
    assert batch["block_attention_mask"].tolist() == expected["attention_mask"].tolist()


@st.composite
def ict_examples(draw):
    token = st.integers(NUM_SPECIAL, len(VOCAB) - 1)
    return [
        {
            "title_token_ids": draw(st.lists(token, max_size=30)),
            "sentence_token_ids": draw(st.lists(st.lists(token, min_size=1, max_size=40), min_size=1, max_size=8)),
        }
        for _ in range(draw(st.integers(1, 5)))
    ]


@suppress_fixture_check
@given(
    examples=ict_examples(),
    query_max_length=st.integers(3, 70),
    block_max_length=st.integers(4, 300),
    probability=st.sampled_from([0.0, 0.9, 1.0]),
    seed=st.integers(0, 2**32),
)
def test_ict_collator_property(tokenizer, examples, query_max_length, block_max_length, probability, seed):
    torch_state = torch.get_rng_state()
    collator = DataCollatorForInverseClozeTask(
        tokenizer,
        query_max_length=query_max_length,
        block_max_length=block_max_length,
        remove_sentence_probability=probability,
        seed=seed,
    )
    batch = collator(examples)
    assert torch.equal(torch.get_rng_state(), torch_state)
    bsz = len(examples)
    assert batch["labels"].tolist() == list(range(bsz))
    assert batch["query_input_ids"].shape[1] <= query_max_length
    assert batch["block_input_ids"].shape[1] <= block_max_length
    for i, example in enumerate(examples):
        q_len = int(batch["query_attention_mask"][i].sum())
        query = batch["query_input_ids"][i, :q_len].tolist()
        assert query[0] == CLS and query[-1] == SEP
        assert (batch["query_input_ids"][i, q_len:] == PAD).all()
        candidates = [
            j for j, s in enumerate(example["sentence_token_ids"]) if s[: query_max_length - 2] == query[1:-1]
        ]
        assert candidates
        b_len = int(batch["block_attention_mask"][i].sum())
        block = batch["block_input_ids"][i, :b_len].tolist()
        types = batch["block_token_type_ids"][i, :b_len].tolist()
        title_end = block.index(SEP)
        assert (
            block[0] == CLS and block[-1] == SEP and block[1:title_end] == example["title_token_ids"][: title_end - 1]
        )
        assert types == [0] * (title_end + 1) + [1] * (b_len - title_end - 1)
        assert (batch["block_token_type_ids"][i, b_len:] == 0).all()
        body = block[title_end + 1 : -1]
        sentences = example["sentence_token_ids"]
        possible = [[t for s in sentences for t in s]] + [
            [t for k, s in enumerate(sentences) if k != j for t in s] for j in candidates if len(sentences) > 1
        ]
        title_kept = min(len(example["title_token_ids"]), max(0, block_max_length // 2 - 2))  # as the index
        assert title_end - 1 == title_kept
        body_budget = block_max_length - 3 - title_kept
        assert any(body == p[:body_budget] for p in possible)
        if probability == 0.0 or len(sentences) == 1:
            assert body == possible[0][:body_budget]


def test_ict_end_to_end_from_blocks(tokenizer):
    blocks = datasets.Dataset.from_dict(
        {"title": ["Alan Turing"] * 3, "text": ["Alan Turing was born in London. He met Ada. It cost 12 %."] * 3}
    )
    examples = prepare_ict_examples(blocks, tokenizer)
    batch = DataCollatorForInverseClozeTask(tokenizer, seed=0)(list(examples.with_format("numpy")))
    assert batch["query_input_ids"].shape[0] == 3 and batch["labels"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(
        batch["block_input_ids"][:, :4].numpy(), [[CLS, *_ids(tokenizer, "Alan Turing"), SEP]] * 3
    )
