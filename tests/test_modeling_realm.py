"""Model tests on tiny random configurations: shapes, round trips, gradients, batching and bad input."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, BertConfig, BertModel

from realm_hf import (
    RealmConfig,
    RealmEmbedder,
    RealmForOpenQA,
    RealmKnowledgeAugEncoder,
    RealmReader,
    RealmScorer,
    ops,
)
from realm_hf.modeling_realm import RealmReaderProjection

from .utils import B, L, N, random_inputs, reader_batch, tiny_config_kwargs


torch.manual_seed(0)


def test_config_defaults_match_reference():
    config = RealmConfig()
    expected = {
        "vocab_size": 30522,
        "hidden_size": 768,
        "retriever_proj_size": 128,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_candidates": 8,
        "intermediate_size": 3072,
        "hidden_act": "gelu_new",
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "span_hidden_size": 256,
        "max_span_width": 10,
        "reader_layer_norm_eps": 1e-3,
        "reader_beam_size": 5,
        "reader_seq_len": 320,
        "num_block_records": 13353718,
        "searcher_beam_size": 5000,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "tie_word_embeddings": True,
    }
    assert {k: getattr(config, k) for k in expected} == expected
    assert config.model_type == "realm"


def test_config_round_trip_keeps_legacy_keys(tmp_path, tiny_config):
    config = RealmConfig(searcher_seq_len=64, use_scann=False, **{**tiny_config.to_diff_dict()})
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, RealmConfig)
    assert reloaded.searcher_seq_len == 64 and reloaded.use_scann is False
    assert reloaded.to_diff_dict() == config.to_diff_dict()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        RealmConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="reader_beam_size"):
        RealmConfig(reader_beam_size=0)
    with pytest.raises(Exception, match="hidden_size"):
        RealmConfig(hidden_size="big")


def test_config_of_another_model_type_is_refused(tmp_path):
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='bert'"):
        RealmConfig.from_pretrained(tmp_path)
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a REALM checkpoint"):
        RealmEmbedder.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------------------------
# Shapes and outputs
# ------------------------------------------------------------------------------------------------------------------


def test_embedder_shapes_and_tuple_output(tiny_config):
    model = RealmEmbedder._from_config(tiny_config, attn_implementation="eager").eval()
    ids = random_inputs(tiny_config, 4, L)
    out = model(ids, output_hidden_states=True, output_attentions=True)
    assert out.projected_score.shape == (4, tiny_config.retriever_proj_size)
    assert len(out.hidden_states) == tiny_config.num_hidden_layers + 1
    assert len(out.attentions) == tiny_config.num_hidden_layers
    as_tuple = model(ids, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.projected_score)


def test_gelu_new_runs_as_realm_gelu_tanh_with_the_same_outputs(tiny_config):
    """`gelu_new` becomes `RealmGELUTanh`; swapping the original module back changes nothing."""
    from transformers.activations import GELUTanh, NewGELUActivation

    from realm_hf.ops import RealmGELUTanh

    assert tiny_config.hidden_act == "gelu_new"
    torch.manual_seed(0)
    model = RealmEmbedder(tiny_config).eval()
    activations = [m for m in model.modules() if isinstance(m, (GELUTanh, NewGELUActivation))]
    assert activations and all(type(m) is RealmGELUTanh for m in activations)
    ids = random_inputs(tiny_config, 4, L)
    with torch.no_grad():
        fast = model(ids).projected_score
    fused = model(ids).projected_score  # parameters need gradients: the fused kernel
    for layer in model.realm.encoder.layer:
        layer.intermediate.intermediate_act_fn = NewGELUActivation()
    reference = model(ids).projected_score
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grad", [False, True])
def test_realm_gelu_tanh_is_gelu_new_with_and_without_autograd(grad):
    """Both paths of `RealmGELUTanh` (the sigmoid identity without autograd, the fused kernel with it) compute
    `gelu_new`, leave the input untouched, and give its gradient."""
    from transformers.activations import NewGELUActivation

    from realm_hf.ops import RealmGELUTanh

    torch.manual_seed(0)
    x = torch.cat([torch.randn(4096) * 4, torch.tensor([0.0, -0.0, 30.0, -30.0, 1e-8, -1e-8])])
    x.requires_grad_(grad)
    before = x.detach().clone()
    with torch.set_grad_enabled(grad):
        out = RealmGELUTanh()(x)
    expected = NewGELUActivation()(before.double()).float()
    torch.testing.assert_close(out.detach(), expected, atol=2e-6, rtol=1e-5)
    assert torch.equal(x.detach(), before)
    assert out.requires_grad == grad
    if grad:
        out.sum().backward()
        reference = before.double().requires_grad_()
        NewGELUActivation()(reference).sum().backward()
        torch.testing.assert_close(x.grad, reference.grad.float(), atol=2e-6, rtol=1e-5)
    half = RealmGELUTanh()(before.bfloat16())  # other dtypes: the fused kernel
    torch.testing.assert_close(half.float(), expected, atol=0.1, rtol=1e-2)


def test_scorer_shapes_and_inner_product(tiny_config):
    model = RealmScorer(tiny_config).eval()
    assert model.query_embedder is model.embedder
    query, candidates = random_inputs(tiny_config, B, L), random_inputs(tiny_config, B, N, L)
    out = model(query, candidate_input_ids=candidates)
    assert out.relevance_score.shape == (B, N)
    assert out.query_score.shape == (B, tiny_config.retriever_proj_size)
    assert out.candidate_score.shape == (B, N, tiny_config.retriever_proj_size)
    expected = (out.query_score.unsqueeze(1) * out.candidate_score).sum(-1)
    torch.testing.assert_close(out.relevance_score, expected)
    # The candidate embeddings are those of the embedder on each candidate alone.
    alone = model.embedder(candidates[1, 2:3]).projected_score
    torch.testing.assert_close(out.candidate_score[1, 2:3], alone, atol=1e-5, rtol=1e-5)


def test_encoder_logits_and_marginal_loss(tiny_config):
    model = RealmKnowledgeAugEncoder(tiny_config).eval()
    ids = random_inputs(tiny_config, B, N, L)
    relevance = torch.randn(B, N)
    labels = torch.full((B, L), -100)
    labels[:, 2:4] = random_inputs(tiny_config, B, 2)
    out = model(ids, relevance_score=relevance, labels=labels, mlm_mask=labels != -100)
    assert out.logits.shape == (B * N, L, tiny_config.vocab_size)
    # Recompute the marginal likelihood by hand.
    log_probs = out.logits.log_softmax(-1).view(B, N, L, -1)
    prior = relevance.log_softmax(-1)
    total, count = 0.0, 0
    for b in range(B):
        for t in range(L):
            if labels[b, t] == -100:
                continue
            total += torch.logsumexp(prior[b] + log_probs[b, :, t, labels[b, t]], 0)
            count += 1
    torch.testing.assert_close(out.loss, -total / count)


def test_encoder_decoder_is_tied_to_word_embeddings(tiny_config):
    model = RealmKnowledgeAugEncoder(tiny_config)
    assert model.cls.predictions.decoder.weight is model.realm.embeddings.word_embeddings.weight
    embedder = RealmEmbedder(tiny_config)
    assert embedder.cls.predictions.decoder.weight is not embedder.realm.embeddings.word_embeddings.weight


def test_reader_span_enumeration_is_width_major(tiny_config):
    head = RealmReaderProjection(tiny_config)
    starts, ends = head.span_candidates(6, torch.device("cpu"))
    expected = [(s, s + w - 1) for w in range(1, tiny_config.max_span_width + 1) for s in range(6 - w + 1)]
    assert list(zip(starts.tolist(), ends.tolist())) == expected


def test_span_mlp_in_chunks_equals_one_pass(tiny_config, monkeypatch):
    """The span MLP runs over the block's spans in chunks; logits and gradients match a single pass."""
    torch.manual_seed(0)
    head = RealmReaderProjection(tiny_config)
    hidden = torch.randn(4, 30, tiny_config.hidden_size, requires_grad=True)
    block_mask = torch.zeros(4, 30, dtype=torch.long)
    for row, (first, last) in enumerate([(3, 29), (5, 20), (2, 12), (4, 25)]):
        block_mask[row, first:last] = 1

    def run(chunk):
        monkeypatch.setattr(ops, "SPAN_CHUNK", chunk)
        hidden.grad = None
        head.zero_grad()
        logits, starts, ends = head(hidden, block_mask)
        valid = logits > torch.finfo(logits.dtype).min
        (logits[valid] * torch.linspace(-1, 1, int(valid.sum()))).sum().backward()
        return logits.detach(), valid, hidden.grad.clone(), head.dense_intermediate.weight.grad.clone()

    logits_one, valid, grad_one, weight_grad_one = run(10**6)
    logits_chunked, valid_chunked, grad_chunked, weight_grad_chunked = run(7)  # hundreds of spans: many chunks
    assert int(valid.sum()) > 20 * 7
    assert torch.equal(valid, valid_chunked)
    torch.testing.assert_close(logits_chunked, logits_one, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_chunked, grad_one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight_grad_chunked, weight_grad_one, rtol=1e-5, atol=1e-6)


def test_reader_prediction_and_loss(tiny_config):
    model = RealmReader(tiny_config).eval()
    batch = reader_batch(tiny_config)
    out = model(**batch)
    assert out.block_idx.shape == () and out.start_pos.shape == (1,) and out.end_pos.shape == (1,)
    # The prediction is the argmax span, inside the evidence block.
    flat = out.logits.argmax()
    row, span = divmod(flat.item(), out.logits.size(1))
    assert out.block_idx.item() == row and out.candidate.item() == span
    assert batch["block_mask"][row, out.start_pos].all() and batch["block_mask"][row, out.end_pos].all()
    assert out.reader_correct.shape == out.logits.shape
    assert out.reader_correct.sum() == 3  # three gold spans inside the reader beam
    torch.testing.assert_close(out.loss, out.retriever_loss + out.reader_loss)


def test_reader_batched_equals_one_question_at_a_time(tiny_config):
    model = RealmReader(tiny_config).eval()
    batches = [reader_batch(tiny_config) for _ in range(3)]
    stacked = {k: torch.stack([b[k] for b in batches]) for k in batches[0]}
    together = model(**stacked)
    losses = []
    for i, batch in enumerate(batches):
        alone = model(**batch)
        assert together.block_idx[i] == alone.block_idx
        assert together.start_pos[i] == alone.start_pos[0] and together.end_pos[i] == alone.end_pos[0]
        torch.testing.assert_close(together.logits[i], alone.logits, atol=1e-5, rtol=1e-5)
        losses.append(alone.loss)
    torch.testing.assert_close(together.loss, torch.stack(losses).mean(), atol=1e-5, rtol=1e-5)


def test_sdpa_matches_eager(tiny_config):
    eager = RealmEmbedder._from_config(tiny_config, attn_implementation="eager").eval()
    sdpa = RealmEmbedder._from_config(tiny_config, attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    ids = random_inputs(tiny_config, 3, L)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    torch.testing.assert_close(
        eager(ids, attention_mask=mask).projected_score,
        sdpa(ids, attention_mask=mask).projected_score,
        atol=1e-5,
        rtol=0,
    )


# ------------------------------------------------------------------------------------------------------------------
# Round trips and Auto classes
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [RealmEmbedder, RealmScorer, RealmKnowledgeAugEncoder, RealmReader])
def test_save_and_reload_gives_identical_outputs(tmp_path, tiny_config, model_class):
    model = model_class(tiny_config).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "pytorch_model.bin").exists()
    reloaded = model_class.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    # Identical weights; outputs agree to the last bits (memory-mapped tensors may take another BLAS path).
    ids = random_inputs(tiny_config, 2, L)
    if model_class is RealmReader:
        batch = reader_batch(tiny_config)
        actual, expected = reloaded(**batch).logits, model(**batch).logits
    elif model_class is RealmScorer:
        cand = random_inputs(tiny_config, 2, N, L)
        actual, expected = reloaded(ids, candidate_input_ids=cand)[0], model(ids, candidate_input_ids=cand)[0]
    else:
        actual, expected = reloaded(ids)[0], model(ids)[0]
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)


def test_auto_classes(tmp_path, tiny_config):
    RealmEmbedder(tiny_config).save_pretrained(tmp_path / "embedder")
    RealmKnowledgeAugEncoder(tiny_config).save_pretrained(tmp_path / "encoder")
    assert isinstance(AutoModel.from_pretrained(tmp_path / "embedder"), RealmEmbedder)
    assert isinstance(AutoModelForMaskedLM.from_pretrained(tmp_path / "encoder"), RealmKnowledgeAugEncoder)
    assert json.loads((tmp_path / "embedder" / "config.json").read_text())["model_type"] == "realm"


def test_separate_query_embedder_round_trip(tmp_path, tiny_config):
    tiny_config.share_query_embedder = False
    model = RealmScorer(tiny_config).eval()
    assert model.query_embedder is not model.embedder
    model.save_pretrained(tmp_path)
    reloaded = RealmScorer.from_pretrained(tmp_path).eval()
    assert reloaded.query_embedder is not reloaded.embedder
    ids, cand = random_inputs(tiny_config, 2, L), random_inputs(tiny_config, 2, N, L)
    assert torch.equal(model(ids, candidate_input_ids=cand)[0], reloaded(ids, candidate_input_ids=cand)[0])


@pytest.mark.parametrize("share_query_embedder", [True, False])
def test_pretraining_sub_models_load_by_their_classes(tmp_path, tiny_config, share_query_embedder):
    """`save_submodels` writes the layout of google/realm-cc-news-pretrained-{embedder,encoder,scorer}: each loads
    with its class (and the Auto classes) and computes what the pre-training model's towers compute."""
    from transformers import AutoModel

    from realm_hf import RealmForPreTraining

    tiny_config.share_query_embedder = share_query_embedder
    model = RealmForPreTraining(tiny_config).eval()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "stale.txt").write_text("replaced as a whole")
    paths = model.save_submodels(tmp_path / "sub")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["embedder", "encoder", "scorer"]
    query, candidates = random_inputs(tiny_config, B, L), random_inputs(tiny_config, B, N, L)

    embedder = RealmEmbedder.from_pretrained(paths["embedder"]).eval()
    assert type(AutoModel.from_pretrained(paths["embedder"])) is RealmEmbedder
    torch.testing.assert_close(embedder(query).projected_score, model.query_embedder(query).projected_score)

    scorer = RealmScorer.from_pretrained(paths["scorer"]).eval()
    expected = torch.einsum(
        "bd,bnd->bn",
        model.query_embedder(query).projected_score,
        model.embedder(candidates.view(-1, L)).projected_score.view(B, N, -1),
    )
    torch.testing.assert_close(scorer(query, candidate_input_ids=candidates).relevance_score, expected)

    encoder = RealmKnowledgeAugEncoder.from_pretrained(paths["encoder"]).eval()
    relevance = torch.randn(B, N)
    torch.testing.assert_close(
        encoder(candidates, relevance_score=relevance).logits,
        model.encoder(candidates, relevance_score=relevance).logits,
    )
    assert json.loads((paths["scorer"] / "config.json").read_text())["architectures"] == ["RealmScorer"]
    assert model.config.architectures != ["RealmScorer"]  # the pre-training model's own config is untouched


# ------------------------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------------------------


def _assert_all_grads(model, skip=("cls.predictions", "pooler")):
    for name, param in model.named_parameters():
        if any(s in name for s in skip):
            continue
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reached {name}"


def test_gradients_reach_every_head(tiny_config):
    embedder = RealmEmbedder(tiny_config)
    embedder(random_inputs(tiny_config, 2, L)).projected_score.pow(2).sum().backward()
    _assert_all_grads(embedder, skip=("cls.predictions",))

    scorer = RealmScorer(tiny_config)
    out = scorer(random_inputs(tiny_config, 2, L), candidate_input_ids=random_inputs(tiny_config, 2, N, L))
    out.relevance_score.log_softmax(-1)[:, 0].sum().backward()
    _assert_all_grads(scorer, skip=("cls.predictions",))

    encoder = RealmKnowledgeAugEncoder(tiny_config)
    relevance = torch.randn(B, N, requires_grad=True)
    labels = torch.full((B, L), -100)
    labels[:, 3] = 7
    encoder(random_inputs(tiny_config, B, N, L), relevance_score=relevance, labels=labels).loss.backward()
    _assert_all_grads(encoder, skip=("pooler",))
    assert relevance.grad is not None and relevance.grad.abs().sum() > 0

    reader = RealmReader(tiny_config)
    batch = reader_batch(tiny_config)
    batch["relevance_score"].requires_grad_(True)
    reader(**batch).loss.backward()
    # The span-score bias shifts every logit equally: softmax losses do not depend on it (zero gradient).
    _assert_all_grads(reader, skip=("cls.predictions", "pooler", "qa_outputs.dense_output.bias"))
    assert batch["relevance_score"].grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------


def test_bad_inputs_get_clear_errors(tiny_config):
    scorer = RealmScorer(tiny_config)
    with pytest.raises(ValueError, match="candidate_input_ids"):
        scorer(random_inputs(tiny_config, 2, L), candidate_input_ids=random_inputs(tiny_config, 3, N, L))
    with pytest.raises(ValueError, match="candidate_attention_mask"):
        scorer(
            random_inputs(tiny_config, 2, L),
            candidate_input_ids=random_inputs(tiny_config, 2, N, L),
            candidate_attention_mask=torch.ones(2, N, L - 1),
        )
    with pytest.raises(ValueError, match="input_ids"):
        scorer(candidate_input_ids=random_inputs(tiny_config, 2, N, L))

    encoder = RealmKnowledgeAugEncoder(tiny_config)
    with pytest.raises(ValueError, match="relevance_score"):
        encoder(random_inputs(tiny_config, B, N, L), labels=torch.zeros(B, L, dtype=torch.long))
    with pytest.raises(ValueError, match="relevance_score"):
        encoder(
            random_inputs(tiny_config, B, N, L), relevance_score=torch.randn(B, N + 1), labels=torch.zeros(B, L).long()
        )

    reader = RealmReader(tiny_config)
    batch = reader_batch(tiny_config)
    with pytest.raises(ValueError, match="block_mask"):
        reader(**{**batch, "block_mask": None})
    with pytest.raises(ValueError, match="relevance_score"):
        reader(**{**batch, "relevance_score": None})
    with pytest.raises(ValueError, match="max_span_width"):
        reader(
            **{
                k: (v[:, :2] if v.dim() == 2 and k != "start_positions" and k != "end_positions" else v)
                for k, v in batch.items()
            }
        )

    with pytest.raises(ValueError, match="head_mask"):
        RealmEmbedder(tiny_config)(random_inputs(tiny_config, 1, L), head_mask=torch.ones(2, 4))


def test_checkpoint_of_another_realm_class_is_refused_unless_asked(tmp_path, tiny_config, caplog):
    """Refused by default, in one line (without transformers' LOAD REPORT before it); `allow_missing_weights=True`
    loads the shared weights, initialises the others and lists them in a warning (the report shown then)."""
    torch.manual_seed(0)
    encoder = RealmKnowledgeAugEncoder(tiny_config)
    encoder.save_pretrained(tmp_path)
    reports = []
    collect = logging.Handler()
    collect.emit = lambda record: reports.append(record.getMessage())
    transformers_loading = logging.getLogger("transformers.modeling_utils")
    transformers_loading.addHandler(collect)
    try:
        with pytest.raises(ValueError, match="saved from RealmKnowledgeAugEncoder.*allow_missing_weights=True"):
            RealmReader.from_pretrained(tmp_path)
        assert not [r for r in reports if "LOAD REPORT" in r]
        with caplog.at_level(logging.WARNING, logger="realm_hf.modeling_realm"):
            reader = RealmReader.from_pretrained(tmp_path, allow_missing_weights=True)
        assert [r for r in reports if "LOAD REPORT" in r]
    finally:
        transformers_loading.removeHandler(collect)
    assert "newly initialised" in caplog.text and "qa_outputs.dense_output.weight" in caplog.text
    shared = encoder.state_dict()["realm.encoder.layer.0.attention.self.query.weight"]
    torch.testing.assert_close(reader.state_dict()["realm.encoder.layer.0.attention.self.query.weight"], shared)


def test_config_that_does_not_match_weights_is_refused(tmp_path, tiny_config):
    RealmEmbedder(tiny_config).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["retriever_proj_size"] = 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="cls.dense"):
        RealmEmbedder.from_pretrained(tmp_path)


def test_open_qa_without_retriever_is_refused(tiny_config):
    model = RealmForOpenQA(tiny_config)
    with pytest.raises(ValueError, match="needs a retriever"):
        model(random_inputs(tiny_config, 1, 6))


def test_init_from_bert_from_a_masked_lm_checkpoint_copies_its_head_quietly(tmp_path):
    """A `BertForMaskedLM` checkpoint: the trunks and the encoder's masked-LM head come from it, and transformers'
    load report (which would call the head's weights unexpected for the trunk) is not printed (a fresh process, as a
    user sees it)."""
    from safetensors.torch import load_file
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=37, max_position_embeddings=64))  # fmt: skip
    bert.save_pretrained(tmp_path)
    code = (
        "import sys\n"
        "from safetensors.torch import save_file\n"
        "from realm_hf import RealmForPreTraining, init_from_bert\n"
        "model = init_from_bert(RealmForPreTraining, sys.argv[1])\n"
        "save_file({k: v.clone() for k, v in model.encoder.cls.state_dict().items()}, sys.argv[2])\n"
    )
    head_file = tmp_path / "head.safetensors"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(head_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "LOAD REPORT" not in done.stderr + done.stdout
    head = load_file(head_file)
    assert torch.equal(head["predictions.transform.dense.weight"], bert.cls.predictions.transform.dense.weight)
    assert torch.equal(head["predictions.bias"], bert.cls.predictions.bias)


def test_init_from_bert_copies_every_trunk(tmp_path):
    from realm_hf import RealmForOpenQA, RealmForPreTraining, init_from_bert

    bert = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=37, max_position_embeddings=64))  # fmt: skip
    bert.save_pretrained(tmp_path)
    model = init_from_bert(RealmForOpenQA, tmp_path, retriever_proj_size=8, reader_beam_size=2)
    assert model.config.hidden_size == 32 and model.config.retriever_proj_size == 8
    for trunk in (model.embedder.realm, model.reader.realm):
        for (name, a), (_, b) in zip(trunk.state_dict().items(), bert.state_dict().items()):
            assert torch.equal(a, b), name
    pretraining = init_from_bert(RealmForPreTraining, tmp_path)
    assert torch.equal(pretraining.encoder.realm.pooler.dense.weight, bert.pooler.dense.weight)
    assert (
        pretraining.encoder.cls.predictions.decoder.weight
        is pretraining.encoder.realm.embeddings.word_embeddings.weight
    )
    BertConfig(hidden_size=32, num_attention_heads=4).save_pretrained(tmp_path / "x")
    (tmp_path / "x" / "config.json").write_text(
        (tmp_path / "x" / "config.json").read_text().replace('"bert"', '"roberta"')
    )
    with pytest.raises(ValueError, match="needs a BERT"):
        init_from_bert(RealmForOpenQA, tmp_path / "x")


@pytest.mark.parametrize("kind", ["relative_key", "relative_key_query"])
def test_relative_position_embeddings_are_refused_not_ignored(kind):
    with pytest.raises(ValueError, match="position_embedding_type='relative_key"):
        RealmConfig(**tiny_config_kwargs(), position_embedding_type=kind)
    assert RealmConfig(**tiny_config_kwargs(), position_embedding_type="absolute").hidden_size > 0


def test_public_names_are_exported_sorted_and_importable():
    import realm_hf

    assert realm_hf.__all__ == sorted(realm_hf.__all__)
    assert all(hasattr(realm_hf, name) for name in realm_hf.__all__)


def test_lazy_exports_match_the_type_checking_imports():
    """`realm_hf/__init__.py` names each public object twice: in `_LAZY_IMPORTS` (what `__getattr__` loads) and in its
    `TYPE_CHECKING` imports (what type checkers and IDEs read); the two agree."""
    import ast

    import realm_hf

    tree = ast.parse(Path(realm_hf.__file__).read_text())
    block = next(
        node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    static = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1
        if node.module is not None:
            static[node.module] = tuple(alias.name for alias in node.names)
    assert static == realm_hf._LAZY_IMPORTS


def test_importing_the_package_registers_with_the_auto_classes_in_a_fresh_process():
    """`import realm_hf` alone (no attribute used) registers the Auto classes and the pipeline task, and loads no
    module it does not need for that (the others come with the first use of one of their names)."""
    code = (
        "import sys, realm_hf\n"
        "from transformers import AutoConfig\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "assert type(AutoConfig.for_model('realm')).__name__ == 'RealmConfig'\n"
        "assert 'realm-open-qa' in PIPELINE_REGISTRY.get_supported_tasks()\n"
        "assert 'realm_hf.training.mlm_head' not in sys.modules\n"
        "realm_hf.fit_masked_lm_head\n"
        "assert 'realm_hf.training.mlm_head' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
