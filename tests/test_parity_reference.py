"""Parity with the original transformers REALM (4.46.3).

`tests/fixtures/reference/` holds tiny random checkpoints saved by the original implementation, in safetensors and
in the legacy `pytorch_model.bin` form of the published checkpoints, with the inputs and outputs it computed
(`tests/fixtures/make_reference_fixtures.py` regenerates them). Each must load with no missing or unexpected keys and
reproduce those outputs: within 1e-5 with eager attention and 1e-4 with SDPA.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realm_hf import RealmEmbedder, RealmKnowledgeAugEncoder, RealmReader, RealmScorer


REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"
TOLERANCE = {"eager": 1e-5, "sdpa": 1e-4}
FORMATS = ["safetensors", "legacy_bin"]


def load_reference(name: str, model_class, checkpoint_format: str, attn_implementation: str):
    model, info = model_class.from_pretrained(
        REFERENCE / name / checkpoint_format, attn_implementation=attn_implementation, output_loading_info=True
    )
    assert info["missing_keys"] == set() or info["missing_keys"] == [], info["missing_keys"]
    assert not info["unexpected_keys"], info["unexpected_keys"]
    assert not info["mismatched_keys"], info["mismatched_keys"]
    return model.eval(), load_file(REFERENCE / name / "inputs_outputs.safetensors")


def assert_close(actual, expected, atol):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


parametrize = pytest.mark.parametrize(
    "checkpoint_format,attn_implementation", [(f, a) for f in FORMATS for a in TOLERANCE]
)


@parametrize
def test_embedder(checkpoint_format, attn_implementation):
    model, data = load_reference("embedder", RealmEmbedder, checkpoint_format, attn_implementation)
    with torch.no_grad():
        out = model(data["input_ids"], attention_mask=data["attention_mask"], token_type_ids=data["token_type_ids"])
    assert_close(out.projected_score, data["projected_score"], TOLERANCE[attn_implementation])


@parametrize
def test_scorer(checkpoint_format, attn_implementation):
    model, data = load_reference("scorer", RealmScorer, checkpoint_format, attn_implementation)
    with torch.no_grad():
        out = model(
            data["input_ids"],
            attention_mask=data["attention_mask"],
            token_type_ids=data["token_type_ids"],
            candidate_input_ids=data["candidate_input_ids"],
            candidate_attention_mask=data["candidate_attention_mask"],
            candidate_token_type_ids=data["candidate_token_type_ids"],
        )
    for key in ("relevance_score", "query_score", "candidate_score"):
        assert_close(out[key], data[key], TOLERANCE[attn_implementation])


@parametrize
def test_knowledge_augmented_encoder(checkpoint_format, attn_implementation):
    model, data = load_reference("encoder", RealmKnowledgeAugEncoder, checkpoint_format, attn_implementation)
    assert model.cls.predictions.decoder.weight is model.realm.embeddings.word_embeddings.weight
    inputs = {k: data[k] for k in ("input_ids", "attention_mask", "token_type_ids", "relevance_score", "labels")}
    with torch.no_grad():
        out = model(**inputs, mlm_mask=data["mlm_mask"])
        out_default_mask = model(**inputs)
    tol = TOLERANCE[attn_implementation]
    assert_close(out.logits, data["logits"], tol)
    assert_close(out.loss, data["loss"], tol)
    assert_close(out_default_mask.loss, data["loss_default_mask"], tol)


@parametrize
def test_reader(checkpoint_format, attn_implementation):
    model, data = load_reference("reader", RealmReader, checkpoint_format, attn_implementation)
    inputs = {
        k: data[k]
        for k in (
            "input_ids",
            "attention_mask",
            "token_type_ids",
            "relevance_score",
            "block_mask",
            "start_positions",
            "end_positions",
            "has_answers",
        )
    }
    with torch.no_grad():
        out = model(**inputs)
    tol = TOLERANCE[attn_implementation]
    # The stored span logits are the reader head's, before the block's retrieval logit is added.
    beam = model.config.reader_beam_size
    assert_close(out.logits, data["reader_logits"] + data["relevance_score"][:beam, None], tol)
    for key in ("loss", "retriever_loss", "reader_loss"):
        assert_close(out[key], data[key], tol)
    for key in ("block_idx", "candidate", "start_pos", "end_pos", "reader_correct", "retriever_correct"):
        assert torch.equal(out[key], data[key]), key
    assert out.block_idx.shape == () and out.start_pos.shape == (1,)


def test_legacy_bin_is_loaded_without_unpickling_code(monkeypatch):
    """The legacy `.bin` files go through torch's weights-only unpickler."""
    calls = []
    original = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    RealmEmbedder.from_pretrained(REFERENCE / "embedder" / "legacy_bin")
    assert calls and all(flag is True for flag in calls)


def test_resaving_legacy_checkpoint_writes_safetensors(tmp_path):
    model = RealmReader.from_pretrained(REFERENCE / "reader" / "legacy_bin")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "pytorch_model.bin").exists()
    saved = load_file(tmp_path / "model.safetensors")
    assert not any("position_ids" in key for key in saved)
