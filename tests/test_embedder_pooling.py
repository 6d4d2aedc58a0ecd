"""Embedder options for sentence-transformers checkpoints (`embedder_pooling`, `embedder_single_segment`) and
`init_from_bert(identity_projection=..., retrieval_logit_scale=...)`."""

import json

import datasets
import pytest
import torch
from transformers import BertConfig, BertModel

from realm_hf import (
    RealmConfig,
    RealmEmbedder,
    RealmForOpenQA,
    RealmForPreTraining,
    compute_embedder_fingerprint,
    embed_corpus,
    init_from_bert,
)
from realm_hf.configuration_realm import EMBEDDER_POOLING_MODES
from realm_hf.retrieval.corpus import tokenize_blocks

from .utils import tiny_config_kwargs


L = 9


def _ids(config: RealmConfig, *shape: int) -> torch.Tensor:
    return torch.randint(5, config.vocab_size, shape, generator=torch.Generator().manual_seed(0))


def _embedder(**overrides) -> RealmEmbedder:
    config = RealmConfig(**{**tiny_config_kwargs(), **overrides})
    torch.manual_seed(0)
    return RealmEmbedder._from_config(config, attn_implementation="eager").eval()


def _tiny_bert(tmp_path, hidden_size: int = 32) -> BertModel:
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=37, max_position_embeddings=64))  # fmt: skip
    bert.save_pretrained(tmp_path)
    return bert.eval()


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the rows of `a` with the rows of `b` (population statistics, as LayerNorm uses)."""
    a = (a - a.mean(-1, keepdim=True)) / a.std(-1, unbiased=False, keepdim=True)
    b = (b - b.mean(-1, keepdim=True)) / b.std(-1, unbiased=False, keepdim=True)
    return a @ b.T / a.size(-1)


# ------------------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------------------


def test_default_pooling_is_the_original_cls_pooler():
    assert RealmConfig().embedder_pooling == "cls"
    assert EMBEDDER_POOLING_MODES == ("cls", "mean")


def test_pooling_round_trips_through_save_and_load(tmp_path):
    config = RealmConfig(**tiny_config_kwargs(), embedder_pooling="mean")
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["embedder_pooling"] == "mean"
    assert RealmConfig.from_pretrained(tmp_path).embedder_pooling == "mean"


def test_a_config_without_the_field_loads_with_cls_pooling(tmp_path):
    RealmConfig(**tiny_config_kwargs()).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("embedder_pooling", None)  # as in the published google/realm-* files
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert RealmConfig.from_pretrained(tmp_path).embedder_pooling == "cls"


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="embedder_pooling must be one of"):
        RealmConfig(embedder_pooling="max")


# ------------------------------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------------------------------


def test_cls_pooling_projects_the_pooler_output():
    model = _embedder()
    ids = _ids(model.config, 3, L)
    with torch.no_grad():
        expected = model.cls(model.realm(input_ids=ids).pooler_output)
        torch.testing.assert_close(model(ids).projected_score, expected)


def test_mean_pooling_projects_the_masked_mean_and_ignores_padding():
    model = _embedder(embedder_pooling="mean")
    ids = _ids(model.config, 2, L)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        hidden = model.realm(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = torch.stack([model.cls(hidden[0].mean(0)), model.cls(hidden[1, :5].mean(0))])
        torch.testing.assert_close(model(ids, attention_mask=mask).projected_score, expected)
        # The padded row embeds like the same text without padding.
        alone = model(ids[1:, :5]).projected_score
        torch.testing.assert_close(model(ids, attention_mask=mask).projected_score[1:], alone, atol=1e-5, rtol=1e-5)


def test_mean_and_cls_pooling_differ_and_both_train():
    cls_model, mean_model = _embedder(), _embedder(embedder_pooling="mean")
    mean_model.load_state_dict(cls_model.state_dict())
    ids = _ids(cls_model.config, 2, L)
    assert not torch.allclose(cls_model(ids).projected_score, mean_model(ids).projected_score)
    mean_model.train()
    mean_model(ids).projected_score[:, 0].sum().backward()  # (the sum of a layer norm is constant)
    assert mean_model.realm.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_mean_pooling_survives_save_and_reload(tmp_path):
    model = _embedder(embedder_pooling="mean")
    model.save_pretrained(tmp_path)
    reloaded = RealmEmbedder.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert reloaded.config.embedder_pooling == "mean"
    ids = _ids(model.config, 2, L)
    torch.testing.assert_close(reloaded(ids).projected_score, model(ids).projected_score)


# ------------------------------------------------------------------------------------------------------------------
# init_from_bert
# ------------------------------------------------------------------------------------------------------------------


def test_identity_projection_gives_the_layer_normalised_mean(tmp_path):
    bert = _tiny_bert(tmp_path)
    model = init_from_bert(
        RealmForOpenQA, tmp_path, identity_projection=True, retriever_proj_size=32, embedder_pooling="mean"
    ).eval()
    dense = model.embedder.cls.dense
    torch.testing.assert_close(dense.weight, torch.eye(32))
    assert dense.bias.abs().max() == 0
    ids = torch.randint(5, 50, (4, L), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled = bert(input_ids=ids).last_hidden_state.mean(1)
        scores = model.embedder(input_ids=ids).projected_score
    torch.testing.assert_close(scores, torch.nn.functional.layer_norm(pooled, (32,), eps=1e-12), atol=1e-5, rtol=1e-5)
    # Inner products are hidden_size x correlation (layer-norm weights of 1).
    torch.testing.assert_close(scores @ scores.T, 32 * _correlation(pooled, pooled), atol=1e-3, rtol=1e-4)


def test_retrieval_logit_scale_sets_the_inner_product_scale(tmp_path):
    bert = _tiny_bert(tmp_path)
    model = init_from_bert(
        RealmForPreTraining,
        tmp_path,
        identity_projection=True,
        retrieval_logit_scale=20.0,
        retriever_proj_size=32,
        embedder_pooling="mean",
    ).eval()
    ids = torch.randint(5, 50, (4, L), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        pooled = bert(input_ids=ids).last_hidden_state.mean(1)
        scores = model.embedder(input_ids=ids).projected_score
    torch.testing.assert_close(scores @ scores.T, 20.0 * _correlation(pooled, pooled), atol=1e-3, rtol=1e-4)
    assert torch.allclose(scores.norm(dim=-1), torch.full((4,), 20.0**0.5), atol=1e-3)


def test_identity_projection_without_it_keeps_a_random_projection(tmp_path):
    _tiny_bert(tmp_path)
    model = init_from_bert(RealmForOpenQA, tmp_path, retriever_proj_size=32)
    assert not torch.allclose(model.embedder.cls.dense.weight, torch.eye(32))


def test_identity_projection_bad_arguments_are_refused(tmp_path):
    _tiny_bert(tmp_path)
    with pytest.raises(ValueError, match="retriever_proj_size == hidden_size"):
        init_from_bert(RealmForOpenQA, tmp_path, identity_projection=True, retriever_proj_size=8)
    with pytest.raises(ValueError, match="needs identity_projection=True"):
        init_from_bert(RealmForOpenQA, tmp_path, retrieval_logit_scale=20.0, retriever_proj_size=32)
    with pytest.raises(ValueError, match="positive"):
        init_from_bert(
            RealmForOpenQA, tmp_path, identity_projection=True, retrieval_logit_scale=0.0, retriever_proj_size=32
        )


# ------------------------------------------------------------------------------------------------------------------
# Single-segment embedder (sentence-transformers checkpoints)
# ------------------------------------------------------------------------------------------------------------------


def test_single_segment_defaults_off_and_round_trips(tmp_path):
    assert RealmConfig().embedder_single_segment is False
    RealmConfig(**tiny_config_kwargs(), embedder_single_segment=True).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["embedder_single_segment"] is True
    assert RealmConfig.from_pretrained(tmp_path).embedder_single_segment is True


def test_single_segment_embedder_ignores_token_types():
    segmented, single = _embedder(embedder_pooling="mean"), _embedder(embedder_pooling="mean")
    single.config.embedder_single_segment = True
    ids = _ids(segmented.config, 2, L)
    types = torch.zeros_like(ids)
    types[:, 4:] = 1  # [CLS] title [SEP] in segment 0, the body in segment 1, as document_tower_inputs builds them
    with torch.no_grad():
        zeros = segmented(ids, token_type_ids=torch.zeros_like(ids)).projected_score
        # The original layout reads the body in segment 1 (another embedding), the single-segment one does not.
        assert not torch.allclose(segmented(ids, token_type_ids=types).projected_score, zeros)
        torch.testing.assert_close(single(ids, token_type_ids=types).projected_score, zeros)
        torch.testing.assert_close(single(ids).projected_score, zeros)


def test_single_segment_reaches_the_corpus_embeddings_and_the_fingerprint(tiny_tokenizer):
    model = _embedder(embedder_pooling="mean")
    tokenizer = tiny_tokenizer
    documents = datasets.Dataset.from_dict({"title": ["paris", "berlin"], "text": ["the capital of france", "a city"]})
    corpus = tokenize_blocks(documents, tokenizer)
    segmented = embed_corpus(model, corpus, tokenizer, show_progress=False)
    fingerprint = compute_embedder_fingerprint(model)
    model.config.embedder_single_segment = True
    single = embed_corpus(model, corpus, tokenizer, show_progress=False)
    assert not torch.allclose(torch.from_numpy(segmented), torch.from_numpy(single))
    # An index embedded the other way is reported stale even though the weights are the same.
    assert compute_embedder_fingerprint(model) != fingerprint
