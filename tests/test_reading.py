"""Masked-LM reading (no document / own document / retrieved), the masked-LM head re-fit, and zero-shot recall."""

import copy

import numpy as np
import pytest
import torch

from realm_hf import (
    DataCollatorForRealmPreTraining,
    MaskedLMHeadFitting,
    build_index,
    fit_masked_lm_head,
    gold_passage_recall,
    make_reading_evaluator,
    masked_lm_reading,
    zero_shot_recall,
)
from realm_hf.evaluation.reading import first_blocks, rows_of_documents
from realm_hf.modeling_realm import RealmForPreTraining
from realm_hf.retrieval.retriever import RealmRetriever
from realm_hf.training.masking import tag_salient_spans
from realm_hf.training.mlm_head import masked_lm_head_parameters

from .utils import synthetic_config


@pytest.fixture
def setup(synthetic_tokenizer, knowledge, corpus):
    torch.manual_seed(0)
    model = RealmForPreTraining(synthetic_config(synthetic_tokenizer))
    retriever = RealmRetriever(build_index(corpus, model.embedder, synthetic_tokenizer, show_progress=False),
                               synthetic_tokenizer)  # fmt: skip
    sentences = tag_salient_spans(knowledge.documents, synthetic_tokenizer)
    sentences = sentences.filter(lambda row: len(row["salient_spans"]) > 0)
    collator = DataCollatorForRealmPreTraining(synthetic_tokenizer, max_length=48, seed=0)
    batches = [collator([sentences[i] for i in range(start, start + 8)]) for start in (0, 8)]
    return model, retriever, sentences, batches


def test_masked_lm_reading_scores_three_readings_and_restores_the_model(setup):
    model, retriever, _, batches = setup
    model.train()
    metrics = masked_lm_reading(model, batches, retriever)
    assert model.training and model.retriever is None  # mode and (absent) retriever restored
    assert metrics["masked_tokens"] == sum(int((b["labels"] != -100).sum()) for b in batches)
    for name in ("no_document", "own_document", "retrieved"):
        assert 0.0 <= metrics[f"masked_lm_accuracy_{name}"] <= 1.0
    assert np.isfinite(metrics["retrieval_utility"])
    evaluate = make_reading_evaluator(batches, prefix="eval_")
    assert evaluate(model, retriever, 0) == {f"eval_{k}": v for k, v in metrics.items()}  # same spans every call
    with pytest.raises(ValueError, match="needs a retriever"):
        masked_lm_reading(model, batches)


def test_first_blocks_of_documents():
    """The first block of each document, looked up from a corpus where documents span several blocks."""
    row_of_doc = first_blocks([0, 0, 3, 3, 3, 1])
    assert rows_of_documents(row_of_doc, [3, 0, 1, 3]).tolist() == [2, 0, 5, 2]
    for absent in ([2], [10_000], [-1]):
        with pytest.raises(ValueError, match="no block in the corpus"):
            rows_of_documents(row_of_doc, absent)


def test_head_fit_trains_only_the_head_and_learns(setup):
    """Head only: the body and the (tied) word embeddings keep their weights, the head's change, the loss falls and
    every requires_grad flag is restored; with train_encoder the body trains too."""
    model, retriever, sentences, _ = setup
    model.embedder.requires_grad_(False)  # a flag the fit must give back as it was
    before = copy.deepcopy(model.state_dict())
    collator = DataCollatorForRealmPreTraining(retriever.tokenizer, max_length=48, seed=0)
    history = fit_masked_lm_head(model, retriever, sentences, collator,
                                 MaskedLMHeadFitting(max_steps=30, batch_size=8, learning_rate=1e-2,
                                                     disable_tqdm=True))  # fmt: skip
    after = model.state_dict()
    head = {id(p) for p in masked_lm_head_parameters(model)}
    for name, param in model.named_parameters():
        moved = not torch.equal(before[name], after[name])
        assert moved == (id(param) in head), name
    assert history[-1]["loss"] < history[0]["loss"]
    assert not any(p.requires_grad for p in model.embedder.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())

    fit_masked_lm_head(model, retriever, sentences, collator,
                       MaskedLMHeadFitting(max_steps=2, batch_size=8, train_encoder=True, document="none",
                                           disable_tqdm=True))  # fmt: skip
    body = model.encoder.realm.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(before["encoder.realm.encoder.layer.0.attention.self.query.weight"], body)
    with pytest.raises(ValueError, match="document must be one of"):
        MaskedLMHeadFitting(document="gold")


def test_zero_shot_recall_uses_the_current_towers(setup, synthetic_tokenizer, corpus):
    """Recall against the corpus re-embedded by the model's document tower as it is now, not an older index."""
    model, retriever, _, _ = setup
    doc_ids = np.asarray(corpus["doc_id"])
    questions = ["where was the person born ?", "what is the city ?", "who was a chemist ?"]
    gold = [int(doc_ids[0]), int(doc_ids[5]), [int(doc_ids[7]), int(doc_ids[9])]]
    with torch.no_grad():
        for param in model.embedder.parameters():
            param.add_(0.3 * torch.randn_like(param))  # the towers moved on from `retriever`'s index
    ks = (1, 3, len(corpus))
    fresh = build_index(corpus, model.embedder, synthetic_tokenizer, show_progress=False)
    expected = gold_passage_recall(model.query_embedder, fresh, synthetic_tokenizer, questions, gold, ks=ks)
    assert zero_shot_recall(model, corpus, synthetic_tokenizer, questions, gold, ks=ks) == expected
    assert expected[f"gold_recall_at_{len(corpus)}"] == 1.0  # the whole corpus
