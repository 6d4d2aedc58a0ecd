"""RealmRetriever and RealmForOpenQA end to end: reference semantics, parity and batching."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from realm_hf import RealmConfig, RealmForOpenQA, RealmTokenizerFast
from realm_hf.demo.job import build_tokenizer
from realm_hf.retrieval.formats import longest_first_lengths_array
from realm_hf.retrieval.index import RealmIndex
from realm_hf.retrieval.legacy import load_legacy_block_emb
from realm_hf.retrieval.retriever import RealmRetriever, find_answer_spans

from .utils import PICKLE_ENDINGS, REFERENCE, make_retriever, openqa_retriever


# ------------------------------------------------------------------------------------------------------------------
# The original transformers tests of RealmRetriever (test_retrieval_realm.py), ported.
# ------------------------------------------------------------------------------------------------------------------

ORIGINAL_VOCAB = (
    "[UNK] [CLS] [SEP] [PAD] [MASK] test question this is the first second third fourth fifth record want ##want "
    "##ed wa un runn ##ing , low lowest"
).split()
ORIGINAL_RECORDS = [
    "This is the first record",
    "This is the second record",
    "This is the third record",
    "This is the fourth record",
    "This is the fifth record",
    "This is a longer longer longer record",
]


@pytest.fixture
def original_retriever(tmp_path):
    tokenizer = build_tokenizer(ORIGINAL_VOCAB, tmp_path)
    return make_retriever(ORIGINAL_RECORDS, tokenizer), tokenizer


def test_original_retrieve(original_retriever):
    retriever, tokenizer = original_retriever
    question = tokenizer(["Test question"]).input_ids
    answers = [tokenizer(["the fourth"], add_special_tokens=False).input_ids]
    out = retriever.encode_candidates(
        np.array([[0, 3]]), retriever.question_token_ids(question), answer_ids=answers, max_length=320
    )
    for key in ("input_ids", "attention_mask", "token_type_ids", "block_mask"):
        assert out[key].shape == (1, 2, 10)
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in out["input_ids"][0].tolist()]
    assert tokens[0] == "[CLS] test question [SEP] this is the first record [SEP]".split()
    assert tokens[1] == "[CLS] test question [SEP] this is the fourth record [SEP]".split()


def test_original_block_has_answer(original_retriever):
    retriever, tokenizer = original_retriever
    question = tokenizer(["Test question"]).input_ids
    answers = [tokenizer(["the fourth", "longer longer"], add_special_tokens=False).input_ids]
    out = retriever.encode_candidates(
        np.array([[0, 3, 5]]), retriever.question_token_ids(question), answer_ids=answers, max_length=320
    )
    assert out["has_answers"][0].tolist() == [False, True, True]
    assert out["start_positions"][0].tolist() == [[-1, -1, -1], [6, -1, -1], [6, 7, 8]]
    assert out["end_positions"][0].tolist() == [[-1, -1, -1], [7, -1, -1], [7, 8, 9]]


# ------------------------------------------------------------------------------------------------------------------
# Reader inputs and labels against the reference retriever's output (fixture)
# ------------------------------------------------------------------------------------------------------------------


def test_reader_inputs_match_reference_retriever(openqa_tokenizer, blocks):
    expected = json.loads((REFERENCE / "retriever" / "expected.json").read_text())
    retriever = make_retriever(blocks, openqa_tokenizer)
    out = retriever.encode_candidates(
        np.array([expected["block_ids"]]),
        retriever.question_token_ids(expected["question_input_ids"]),
        answer_ids=[expected["answer_ids"]],
        max_length=expected["max_length"],
    )
    assert out["input_ids"][0].tolist() == expected["input_ids"]
    assert out["attention_mask"][0].tolist() == expected["attention_mask"]
    assert out["token_type_ids"][0].tolist() == expected["token_type_ids"]
    special = torch.tensor(expected["special_tokens_mask"]).bool()
    assert torch.equal(out["block_mask"][0], ~special & torch.tensor(expected["token_type_ids"]).bool())
    assert out["has_answers"][0].tolist() == expected["has_answers"]
    assert out["start_positions"][0].tolist() == expected["start_pos"]
    assert out["end_positions"][0].tolist() == expected["end_pos"]

    truncated = expected["truncation_example"]
    out = retriever.encode_candidates(
        np.array([truncated["block_ids"]]),
        retriever.question_token_ids(expected["question_input_ids"]),
        max_length=truncated["max_length"],
    )
    assert out["input_ids"][0].tolist() == truncated["input_ids"]
    assert out["token_type_ids"][0].tolist() == truncated["token_type_ids"]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60), st.integers(1, 80))
def test_longest_first_truncation_matches_tokenizers(len_a, len_b, budget):
    # The tokenizers library keeps at least one token... compare only where both segments exist.
    tokenizer = _digits_tokenizer()
    a, b = " ".join(["1"] * len_a), " ".join(["2"] * len_b)
    if len_a == 0 or len_b == 0:
        return
    encoded = tokenizer(a, b, truncation="longest_first", max_length=budget + 3, add_special_tokens=True)
    ids = encoded["input_ids"]
    assert tuple(longest_first_lengths_array(len_a, len_b, budget).tolist()) == (
        ids.count(tokenizer.convert_tokens_to_ids("1")),
        ids.count(tokenizer.convert_tokens_to_ids("2")),
    )


_DIGITS = {}


def _digits_tokenizer():
    if "tok" not in _DIGITS:
        import tempfile

        path = Path(tempfile.mkdtemp())
        (path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n1\n2\n")
        _DIGITS["tok"] = RealmTokenizerFast.from_pretrained(str(path))
    return _DIGITS["tok"]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 5), max_size=12), min_size=1, max_size=6),
    st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=3), max_size=3),
)
def test_answer_spans_match_brute_force(blocks_ids, answers):
    found = find_answer_spans(blocks_ids, answers)
    for block, spans in zip(blocks_ids, found):
        expected = [
            (i, i + len(a) - 1) for a in answers for i in range(len(block) - len(a) + 1) if block[i : i + len(a)] == a
        ]
        assert spans == expected
        assert all(0 <= s <= e < len(block) for s, e in spans)


# ------------------------------------------------------------------------------------------------------------------
# RealmForOpenQA against the reference
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint_format", ["safetensors", "legacy_bin"])
def test_open_qa_matches_reference(openqa_tokenizer, blocks, checkpoint_format):
    data = load_file(REFERENCE / "openqa" / "inputs_outputs.safetensors")
    questions = json.loads((REFERENCE / "openqa" / "expected.json").read_text())["questions"]
    retriever = openqa_retriever(openqa_tokenizer, blocks, checkpoint_format)
    model = RealmForOpenQA.from_pretrained(
        REFERENCE / "openqa" / checkpoint_format, retriever=retriever, attn_implementation="eager"
    ).eval()
    for i, question in enumerate(questions):
        with torch.no_grad():
            out = model(
                data[f"q{i}.input_ids"],
                attention_mask=data[f"q{i}.attention_mask"],
                token_type_ids=data[f"q{i}.token_type_ids"],
                answer_ids=question["answer_ids"],
            )
        assert out.retrieved_block_ids[0].tolist() == question["retrieved_block_ids"]
        torch.testing.assert_close(out.retrieved_logits[0], data[f"q{i}.retrieved_logits"], atol=1e-5, rtol=0)
        assert out.predicted_answer_ids.tolist() == question["predicted_answer_ids"]
        assert out.reader_output.block_idx == data[f"q{i}.block_idx"]
        assert torch.equal(out.reader_output.start_pos, data[f"q{i}.start_pos"])
        assert out.reader_output.retriever_correct.tolist() == question["has_answers"]
        for key in ("loss", "retriever_loss", "reader_loss"):
            torch.testing.assert_close(out.reader_output[key], data[f"q{i}.{key}"], atol=1e-5, rtol=0)


def test_open_qa_training_step_matches_reference(openqa_tokenizer, blocks):
    data = load_file(REFERENCE / "openqa" / "inputs_outputs.safetensors")
    train = json.loads((REFERENCE / "openqa" / "expected.json").read_text())["train"]
    question = json.loads((REFERENCE / "openqa" / "expected.json").read_text())["questions"][train["question_index"]]
    model = RealmForOpenQA.from_pretrained(
        REFERENCE / "openqa" / "legacy_bin",
        retriever=openqa_retriever(openqa_tokenizer, blocks),
        attn_implementation="eager",
        **train["config_overrides"],
    ).train()
    out = model(
        data["train.input_ids"],
        attention_mask=data["train.attention_mask"],
        token_type_ids=data["train.token_type_ids"],
        answer_ids=question["answer_ids"],
    )
    assert out.retrieved_block_ids[0].tolist() == train["retrieved_block_ids"]
    assert out.reader_output.retriever_correct.tolist() == train["has_answers"]
    torch.testing.assert_close(out.reader_output.loss, data["train.loss"], atol=1e-5, rtol=0)
    out.reader_output.loss.backward()
    params = dict(model.named_parameters())
    for key in train["grads_stored"]:
        name = key.removeprefix("train.grad.")
        torch.testing.assert_close(params[name].grad, data[key], atol=1e-5, rtol=1e-4)


def test_legacy_block_records_import(openqa_tokenizer, blocks):
    block_emb = load_legacy_block_emb(REFERENCE / "openqa" / "legacy_bin")
    records = REFERENCE / "openqa" / "legacy_bin" / "block_records.npy"
    with pytest.raises(ValueError, match="allow_pickle"):
        RealmIndex.from_legacy(records, block_emb, openqa_tokenizer)
    index = RealmIndex.from_legacy(records, block_emb, openqa_tokenizer, allow_pickle=True, show_progress=False)
    assert list(index.corpus["text"]) == blocks
    assert RealmRetriever(index, openqa_tokenizer).index is index


def test_retriever_from_pretrained_reads_both_layouts(openqa_tokenizer, blocks, tmp_path):
    legacy = REFERENCE / "openqa" / "legacy_bin"
    with pytest.raises(ValueError, match="allow_pickle=True"):
        RealmRetriever.from_pretrained(legacy)
    from_legacy = RealmRetriever.from_pretrained(legacy, allow_pickle=True)
    assert list(from_legacy.index.corpus["text"]) == blocks
    np.testing.assert_array_equal(
        np.asarray(from_legacy.index.embeddings), load_legacy_block_emb(legacy).numpy().astype(np.float32)
    )
    from_legacy.save_pretrained(tmp_path / "saved")
    saved = RealmRetriever.from_pretrained(tmp_path / "saved")  # no pickle needed any more
    assert list(saved.index.corpus["text"]) == blocks and saved.tokenizer.vocab == openqa_tokenizer.vocab
    with_tokenizer = RealmRetriever.from_pretrained(str(tmp_path / "saved"), tokenizer=openqa_tokenizer)
    assert with_tokenizer.tokenizer is openqa_tokenizer
    (tmp_path / "bare").mkdir()
    openqa_tokenizer.save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match="holds no knowledge index"):
        RealmRetriever.from_pretrained(tmp_path / "bare")


def test_open_qa_return_dict_false_is_the_original_tuple(openqa_tokenizer, blocks):
    data = load_file(REFERENCE / "openqa" / "inputs_outputs.safetensors")
    model = RealmForOpenQA.from_pretrained(
        REFERENCE / "openqa" / "safetensors", retriever=openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    ).eval()
    inputs = {k: data[f"q0.{k}"] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        reader_output, predicted_answer_ids = model(**inputs, return_dict=False)  # the original's documented use
        expected = model(**inputs)
    torch.testing.assert_close(reader_output.logits, expected.reader_output.logits)
    assert predicted_answer_ids.tolist() == expected.predicted_answer_ids.tolist()


def test_batch_of_four_gives_the_same_answers_as_one_at_a_time(openqa_tokenizer, blocks):
    data = load_file(REFERENCE / "openqa" / "inputs_outputs.safetensors")
    questions = json.loads((REFERENCE / "openqa" / "expected.json").read_text())["questions"][:4]
    model = RealmForOpenQA.from_pretrained(
        REFERENCE / "openqa" / "safetensors", retriever=openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    ).eval()
    texts = [q["question"] for q in questions]
    batch = openqa_tokenizer(texts, padding=True, return_tensors="pt")
    answers = [q["answer_ids"] for q in questions]
    with torch.no_grad():
        together = model(**batch, answer_ids=answers)
        assert len(together.predicted_answer_ids) == 4
        for i, question in enumerate(questions):
            single = openqa_tokenizer([question["question"]], return_tensors="pt")
            alone = model(**single, answer_ids=[question["answer_ids"]])
            assert together.predicted_answer_ids[i].tolist() == alone.predicted_answer_ids.tolist()
            assert together.retrieved_block_ids[i].tolist() == alone.retrieved_block_ids[0].tolist()
            assert together.predicted_answer_ids[i].tolist() == question["predicted_answer_ids"]
    torch.testing.assert_close(
        together.reader_output.loss,
        torch.stack([data[f"q{i}.loss"] for i in range(4)]).mean(),
        atol=1e-4,
        rtol=0,
    )


def test_open_qa_gradients_reach_query_embedder_and_reader(openqa_tokenizer, blocks):
    # Every block is retrieved and read, so the gold spans are always in the reader beam.
    config = RealmConfig.from_pretrained(
        REFERENCE / "openqa" / "safetensors", searcher_beam_size=len(blocks), reader_beam_size=len(blocks)
    )
    torch.manual_seed(0)
    model = RealmForOpenQA(config, retriever=openqa_retriever(openqa_tokenizer, blocks)).train()
    batch = openqa_tokenizer(["what is the capital of france?", "what is the capital of germany?"], padding=True,
                             return_tensors="pt")  # fmt: skip
    answers = [openqa_tokenizer(["paris"], add_special_tokens=False).input_ids,
               openqa_tokenizer(["berlin"], add_special_tokens=False).input_ids]  # fmt: skip
    out = model(**batch, answer_ids=answers)
    out.reader_output.loss.backward()
    assert model.embedder.cls.dense.weight.grad.abs().sum() > 0
    assert model.reader.qa_outputs.dense_output.weight.grad.abs().sum() > 0


def test_open_qa_bad_answer_format(openqa_tokenizer, blocks, tiny_config):
    config = RealmConfig.from_pretrained(REFERENCE / "openqa" / "safetensors")
    model = RealmForOpenQA(config, retriever=openqa_retriever(openqa_tokenizer, blocks)).eval()
    batch = openqa_tokenizer(["who?", "what?"], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="one list of answers per question"):
        model(**batch, answer_ids=[[5, 6], [7]])
    with pytest.raises(ValueError, match="answers for 1 questions"):
        model(**batch, answer_ids=[[[5, 6]]])


def test_models_take_any_retriever_of_the_protocol_and_refuse_other_objects(openqa_tokenizer, blocks, tiny_config):
    from realm_hf import RealmForPreTraining
    from realm_hf.retrieval.protocols import Index, Retriever

    retriever = make_retriever(blocks, openqa_tokenizer)
    assert isinstance(retriever, Retriever) and isinstance(retriever.index, Index)
    for model_class in (RealmForOpenQA, RealmForPreTraining):
        model = model_class(tiny_config, retriever=retriever)
        assert model.retriever is retriever
        with pytest.raises(TypeError, match="retrieve_for_pretraining"):
            model.set_retriever(retriever.index)  # an index is not a retriever
        with pytest.raises(TypeError, match="RealmRetriever"):
            model_class(tiny_config, retriever=object())
        model.set_retriever(None)
        assert model.retriever is None


def test_reader_reads_the_question_without_unk_and_mask_as_the_original(openqa_tokenizer, blocks):
    """The original retriever decoded the question with `skip_special_tokens=True` and tokenized it again: a question
    with a character outside the vocabulary ([UNK]) or a [MASK] reaches the reader without them."""
    expected = json.loads((REFERENCE / "retriever" / "expected.json").read_text())["special_tokens_question"]
    question_ids = expected["question_input_ids"]
    assert 1 in question_ids[0] and 4 in question_ids[0]  # [UNK] and [MASK]
    retriever = make_retriever(blocks, openqa_tokenizer)
    query = np.zeros((1, len(blocks)), dtype=np.float32)
    query[0, expected["block_ids"]] = [3.0, 2.0, 1.0]  # identity embeddings: retrieves these blocks in this order
    out = retriever(query, question_input_ids=torch.tensor(question_ids), num_retrieved=3, max_length=32)
    assert out["retrieved_block_ids"][0].tolist() == expected["block_ids"]
    assert out["input_ids"][0].tolist() == expected["input_ids"]
    assert out["token_type_ids"][0].tolist() == expected["token_type_ids"]


@pytest.mark.parametrize("positional", [False, True])
def test_transformers4_constructor_and_call_give_the_original_outputs(openqa_tokenizer, blocks, positional):
    """`RealmRetriever(block_records=..., tokenizer=...)` and its original call give the outputs of the
    transformers 4.46.3 retriever (`retriever/expected.json`); such a retriever cannot search and says what to use."""
    expected = json.loads((REFERENCE / "retriever" / "expected.json").read_text())
    records = np.array([b.encode("utf-8") for b in blocks], dtype=object)
    if positional:
        retriever = RealmRetriever(records, openqa_tokenizer)
    else:
        retriever = RealmRetriever(block_records=records, tokenizer=openqa_tokenizer)
    has_answers, start_pos, end_pos, concat = retriever(
        np.array(expected["block_ids"]),
        expected["question_input_ids"],
        answer_ids=expected["answer_ids"],
        max_length=expected["max_length"],
        return_tensors="np",
    )
    assert sorted(concat.keys()) == expected["concat_keys"]
    for key in ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask"):
        assert concat[key].tolist() == expected[key], key
    assert has_answers == expected["has_answers"]  # lists, as the original returned them
    assert start_pos == expected["start_pos"] and end_pos == expected["end_pos"]
    none = retriever(np.array(expected["block_ids"]), expected["question_input_ids"], None, max_length=32)
    assert list(none[:3]) == expected["without_answers"]["first_three"] == [None, None, None]
    assert torch.equal(none[3]["input_ids"], torch.tensor(expected["input_ids"]))
    truncated = expected["truncation_example"]
    *_, concat = retriever(np.array(truncated["block_ids"]), expected["question_input_ids"], None, max_length=20)
    assert concat["input_ids"].tolist() == truncated["input_ids"]
    assert concat["special_tokens_mask"].tolist() == truncated["special_tokens_mask"]

    with pytest.raises(TypeError, match="cannot search"):
        retriever.retrieve(torch.zeros(1, 4), question_input_ids=expected["question_input_ids"])
    with pytest.raises(TypeError, match="block ids"):
        retriever(torch.zeros(1, 4), question_input_ids=expected["question_input_ids"])


# The transformers-4 retriever test's world (`tests/models/realm/test_retrieval_realm.py` of transformers 4.46.3).
TRANSFORMERS4_VOCAB = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "test", "question", "this", "is", "the", "first",
                       "second", "third", "fourth", "fifth", "record", "want", "##want", "##ed", "wa", "un", "runn",
                       "##ing", ",", "low", "lowest"]  # fmt: skip
TRANSFORMERS4_RECORDS = np.array(
    [b"This is the first record", b"This is the second record", b"This is the third record",
     b"This is the fourth record", b"This is the fifth record", b"This is a longer longer longer record"],
    dtype=object,
)  # fmt: skip


@pytest.fixture
def transformers4_retriever(tmp_path):
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocab.txt").write_text("\n".join(TRANSFORMERS4_VOCAB) + "\n", encoding="utf-8")
    return RealmRetriever(block_records=TRANSFORMERS4_RECORDS, tokenizer=RealmTokenizerFast.from_pretrained(
        str(tmp_path / "vocab")))  # fmt: skip


def test_transformers4_block_has_answer_returns_lists(transformers4_retriever):
    """transformers 4's `test_block_has_answer`, as it was written: lists, -1 padded to the most answers in a block."""
    tokenizer = transformers4_retriever.tokenizer
    answer_ids = tokenizer(["the fourth", "longer longer"], add_special_tokens=False, return_token_type_ids=False,
                           return_attention_mask=False).input_ids  # fmt: skip
    has_answers, start_pos, end_pos, _ = transformers4_retriever(
        np.array([0, 3, 5], dtype="long"), tokenizer(["Test question"]).input_ids, answer_ids=answer_ids,
        max_length=RealmConfig().reader_seq_len, return_tensors="np",
    )  # fmt: skip
    assert [False, True, True] == has_answers
    assert [[-1, -1, -1], [6, -1, -1], [6, 7, 8]] == start_pos
    assert [[-1, -1, -1], [7, -1, -1], [7, 8, 9]] == end_pos


def test_transformers4_retriever_saves_and_loads_its_records_without_pickle(transformers4_retriever, tmp_path):
    """The transformers-4 `save_pretrained` / `from_pretrained` round trip, with the records kept as an Arrow dataset
    (no pickle); the original pickled `block_records.npy` alone still loads, only with `allow_pickle=True`."""
    transformers4_retriever.save_pretrained(tmp_path / "realm_block_records")
    saved = sorted(p.name for p in (tmp_path / "realm_block_records").rglob("*") if p.is_file())
    assert not [name for name in saved if name.endswith(".npy") or name.endswith(PICKLE_ENDINGS)], saved
    retriever = transformers4_retriever.from_pretrained(tmp_path / "realm_block_records")
    assert type(retriever).__name__ == "BlockRecordsRetriever"
    assert retriever.block_records[0] == b"This is the first record"
    assert list(retriever.block_records) == list(TRANSFORMERS4_RECORDS)
    question = retriever.tokenizer(["Test question"]).input_ids
    _, _, _, concat = retriever(np.array([0, 3]), question, answer_ids=None, max_length=10, return_tensors="np")
    assert retriever.tokenizer.convert_ids_to_tokens(concat.input_ids[0]) == [
        "[CLS]", "test", "question", "[SEP]", "this", "is", "the", "first", "record", "[SEP]"
    ]  # fmt: skip

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    transformers4_retriever.tokenizer.save_pretrained(legacy)
    np.save(legacy / "block_records.npy", TRANSFORMERS4_RECORDS, allow_pickle=True)  # what transformers 4 wrote
    with pytest.raises(ValueError, match="allow_pickle=True"):
        RealmRetriever.from_pretrained(legacy)
    assert RealmRetriever.from_pretrained(legacy, allow_pickle=True).block_records[5] == TRANSFORMERS4_RECORDS[5]
