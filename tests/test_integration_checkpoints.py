"""The original transformers integration tests on the published google/realm-* checkpoints (marker `slow`).

They need the checkpoints: from the Hub (online) or a local cache. Where neither is available they are skipped,
never faked. Expected values are those of the original `tests/models/realm/test_modeling_realm.py`.
"""

import pytest
import torch

from realm_hf import (
    RealmConfig,
    RealmEmbedder,
    RealmForOpenQA,
    RealmIndex,
    RealmKnowledgeAugEncoder,
    RealmReader,
    RealmRetriever,
    RealmScorer,
    RealmTokenizer,
    load_legacy_block_emb,
)


pytestmark = pytest.mark.slow


def checkpoint(repo_id: str, *patterns: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, allow_patterns=list(patterns) or None)
    except Exception as err:  # offline, no cache, gated: the test cannot run here
        pytest.skip(f"{repo_id} is not available ({type(err).__name__}: {err})")


WEIGHTS = ("config.json", "pytorch_model.bin", "model.safetensors", "vocab.txt", "tokenizer_config.json",
           "special_tokens_map.json")  # fmt: skip


def test_inference_embedder():
    model = RealmEmbedder.from_pretrained(checkpoint("google/realm-cc-news-pretrained-embedder", *WEIGHTS)).eval()
    output = model(torch.tensor([[0, 1, 2, 3, 4, 5]]))[0]
    assert output.shape == (1, 128)
    torch.testing.assert_close(output[:, :3], torch.tensor([[-0.0714, -0.0837, -0.1314]]), atol=1e-4, rtol=0)


def test_inference_encoder():
    path = checkpoint("google/realm-cc-news-pretrained-encoder", *WEIGHTS)
    model = RealmKnowledgeAugEncoder.from_pretrained(path, num_candidates=2).eval()
    input_ids = torch.tensor([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
    output = model(input_ids, relevance_score=torch.tensor([[0.3, 0.7]], dtype=torch.float32))[0]
    assert output.shape == (2, 6, 30522)
    expected = torch.tensor([[[-11.0888, -11.2544], [-10.2170, -10.3874]]])
    torch.testing.assert_close(output[1, :2, :2], expected[0], atol=1e-4, rtol=0)


def test_inference_scorer():
    model = RealmScorer.from_pretrained(
        checkpoint("google/realm-cc-news-pretrained-scorer", *WEIGHTS), num_candidates=2
    )
    model.eval()
    output = model(
        torch.tensor([[0, 1, 2, 3, 4, 5]]),
        candidate_input_ids=torch.tensor([[[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]]),
    )[0]
    assert output.shape == (1, 2)
    torch.testing.assert_close(output, torch.tensor([[0.7410, 0.7170]]), atol=1e-4, rtol=0)


def test_inference_reader():
    config = RealmConfig(reader_beam_size=2, max_span_width=3)
    model = RealmReader.from_pretrained(checkpoint("google/realm-orqa-nq-reader", *WEIGHTS), config=config).eval()
    output = model(
        torch.arange(10).view((2, 5)),
        token_type_ids=torch.tensor([[0, 0, 1, 1, 1], [0, 0, 1, 1, 1]]),
        relevance_score=torch.tensor([0.3, 0.7], dtype=torch.float32),
        block_mask=torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 1, 0]], dtype=torch.int64),
        return_dict=True,
    )
    assert output.block_idx.shape == () and output.start_pos.shape == (1,) and output.end_pos.shape == (1,)
    assert output.block_idx.item() == 1 and output.start_pos.item() == 3 and output.end_pos.item() == 3


def test_inference_open_qa():
    path = checkpoint("google/realm-orqa-nq-openqa", *WEIGHTS, "block_records.npy")
    tokenizer = RealmTokenizer.from_pretrained(path)
    index = RealmIndex.from_legacy(
        f"{path}/block_records.npy", load_legacy_block_emb(path), tokenizer, allow_pickle=True
    )
    model = RealmForOpenQA.from_pretrained(path, retriever=RealmRetriever(index, tokenizer)).eval()
    question = tokenizer(["Who is the pioneer in modern computer science?"], padding=True, truncation=True,
                         max_length=model.config.searcher_seq_len, return_tensors="pt")  # fmt: skip
    predicted = model(**question).predicted_answer_ids
    assert tokenizer.decode(predicted) == "alan mathison turing"
