"""Every path on a CUDA device, against the same computation on the CPU (marker `gpu`).

Without CUDA these tests are skipped. `REALM_TEST_DEVICE=cpu python -m pytest -m gpu tests/test_gpu.py` runs them on
the CPU as a dry run of their logic (what `benchmarks/gpu_check.sh --smoke` does), so that no GPU time is spent on a
test that cannot pass.
"""

import copy
import os

import numpy as np
import pytest
import torch

from realm_hf import (
    RealmEmbedder,
    RealmForOpenQA,
    RealmForPreTraining,
    RealmKnowledgeAugEncoder,
    RealmReader,
    RealmScorer,
    answer_questions,
)
from realm_hf.retrieval.embedding import embed_corpus

from .utils import REFERENCE, B, L, N, make_corpus, make_retriever, openqa_retriever, random_inputs, reader_batch


pytestmark = pytest.mark.gpu

DEVICE_ENV = "REALM_TEST_DEVICE"


@pytest.fixture
def device() -> torch.device:
    requested = os.environ.get(DEVICE_ENV)
    if requested:
        return torch.device(requested)
    if not torch.cuda.is_available():
        pytest.skip(f"no CUDA device (set {DEVICE_ENV}=cpu for a dry run on the CPU)")
    return torch.device("cuda")


def _on(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _outputs(config):
    """For each model class: (model, inputs, the output compared, a scalar to backpropagate)."""
    torch.manual_seed(0)
    labels = torch.full((B, L), -100)
    labels[:, 3] = 7
    batch_of_reader = reader_batch(config)
    return {
        "embedder": (RealmEmbedder(config), {"input_ids": random_inputs(config, B, L)}, "projected_score"),
        "scorer": (
            RealmScorer(config),
            {"input_ids": random_inputs(config, B, L), "candidate_input_ids": random_inputs(config, B, N, L)},
            "relevance_score",
        ),
        "encoder": (
            RealmKnowledgeAugEncoder(config),
            {"input_ids": random_inputs(config, B, N, L), "relevance_score": torch.randn(B, N), "labels": labels},
            "loss",
        ),
        "reader": (RealmReader(config), batch_of_reader, "loss"),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", ["embedder", "scorer", "encoder", "reader"])
def test_model_forward_and_backward_match_the_cpu(tiny_config, device, name, dtype):
    model, inputs, key = _outputs(tiny_config)[name]
    model.eval()
    expected = getattr(model(**inputs), key).detach()
    on_device = copy.deepcopy(model).to(device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        output = getattr(on_device(**_on(inputs, device)), key)
    tolerance = 1e-4 if dtype == torch.float32 else 6e-2
    torch.testing.assert_close(output.float().cpu(), expected, rtol=tolerance, atol=tolerance * expected.abs().max())
    output.float().pow(2).sum().backward()
    grads = [p.grad for p in on_device.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_open_qa_with_device_queries_and_a_cpu_index_gives_the_cpu_answers(device, openqa_tokenizer, blocks):
    questions = ["who was a computer scientist?", "what is the capital of france?", "where was ada lovelace born?"]
    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    model = RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors", retriever=retriever).eval()
    expected = answer_questions(model, openqa_tokenizer, questions)
    model.to(device)
    got = answer_questions(model, openqa_tokenizer, questions)
    assert [(a.answer, a.block_id) for a in got] == [(a.answer, a.block_id) for a in expected]
    np.testing.assert_allclose([a.score for a in got], [a.score for a in expected], rtol=1e-4, atol=1e-4)


def test_pipeline_on_the_device(device, openqa_tokenizer, blocks):
    from transformers import pipeline

    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    model = RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors", retriever=retriever).eval()
    expected = answer_questions(model, openqa_tokenizer, ["who was a computer scientist?"])[0]
    qa = pipeline("realm-open-qa", model=model, tokenizer=openqa_tokenizer, device=device)
    result = qa("who was a computer scientist?")
    assert (result["answer"], result["block_id"]) == (expected.answer, expected.block_id)


def test_pretraining_with_its_retriever_on_the_device(tiny_config, device, tiny_tokenizer):
    texts = [f"record {i} of the test . paris is the capital city of france ." for i in range(6)]
    torch.manual_seed(0)
    model = RealmForPreTraining(tiny_config).eval()
    embeddings = embed_corpus(model.embedder, make_corpus(texts, tiny_tokenizer), tiny_tokenizer, show_progress=False)
    model.set_retriever(make_retriever(texts, tiny_tokenizer, embeddings))
    batch = tiny_tokenizer(
        ["who was born in [MASK] ?", "paris is the capital of [MASK] ."], padding=True, return_tensors="pt"
    )
    labels = torch.full_like(batch["input_ids"], -100)
    labels[batch["input_ids"] == tiny_tokenizer.mask_token_id] = tiny_tokenizer.convert_tokens_to_ids("france")
    expected = model(**batch, labels=labels)
    model.to(device)
    output = model(**_on(batch, device), labels=labels.to(device))
    assert torch.equal(output.retrieved_block_ids.cpu(), expected.retrieved_block_ids)
    torch.testing.assert_close(output.loss.cpu(), expected.loss, rtol=1e-4, atol=1e-4)
    output.loss.backward()
    assert model.embedder.cls.dense.weight.grad is not None


def test_embed_corpus_on_the_device_with_autocast(tiny_config, device, tiny_tokenizer):
    texts = [f"record {i} : alan turing was a computer scientist in london ." for i in range(20)]
    corpus = make_corpus(texts, tiny_tokenizer)
    torch.manual_seed(0)
    embedder = RealmEmbedder(tiny_config).eval()
    expected = embed_corpus(embedder, corpus, tiny_tokenizer, batch_size=8, show_progress=False)
    on_device = copy.deepcopy(embedder).to(device)
    exact = embed_corpus(on_device, corpus, tiny_tokenizer, batch_size=8, show_progress=False)
    np.testing.assert_allclose(exact, expected, rtol=1e-4, atol=1e-4)
    fast = embed_corpus(
        on_device, corpus, tiny_tokenizer, batch_size=8, autocast_dtype=torch.bfloat16, show_progress=False
    )
    cosine = (fast * expected).sum(-1) / (np.linalg.norm(fast, axis=-1) * np.linalg.norm(expected, axis=-1))
    assert fast.dtype == np.float32 and cosine.min() > 0.99
