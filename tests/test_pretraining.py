"""RealmForPreTraining and corpus embedding on the synthetic knowledge corpus."""

import time

import numpy as np
import pytest
import torch

from realm_hf import RealmConfig, RealmKnowledgeAugEncoder
from realm_hf.demo.job import masked_facts
from realm_hf.modeling_realm import RealmForPreTraining, marginal_mlm_loss
from realm_hf.retrieval.corpus import tokenize_blocks
from realm_hf.retrieval.embedding import embed_corpus
from realm_hf.retrieval.formats import document_tower_inputs
from realm_hf.retrieval.index import RealmIndex
from realm_hf.retrieval.retriever import RealmRetriever

from .utils import pretraining_trainer, synthetic_config, tiny_config_kwargs


def model_with_retriever(tokenizer, corpus) -> RealmForPreTraining:
    """A seeded tiny `RealmForPreTraining` with a retriever over its own embeddings of `corpus`."""
    torch.manual_seed(0)
    model = RealmForPreTraining(synthetic_config(tokenizer))
    embeddings = embed_corpus(model.embedder, corpus, tokenizer, batch_size=8, show_progress=False)
    model.set_retriever(RealmRetriever(RealmIndex.build(corpus, embeddings, show_progress=False), tokenizer))
    return model


def masked_batch(tokenizer, knowledge, rows=(0, 3, 7)):
    data = masked_facts(tokenizer, knowledge.facts.select(rows))
    batch = {k: data[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    return batch, data["labels"], data["doc_ids"]


def test_pretraining_loss_equals_scorer_plus_encoder(synthetic_tokenizer, knowledge):
    torch.manual_seed(0)
    config = synthetic_config(synthetic_tokenizer)
    model = RealmForPreTraining(config).eval()
    batch, labels, _ = masked_batch(synthetic_tokenizer, knowledge)
    bsz, k = labels.size(0), config.num_candidates
    candidates = document_tower_inputs(
        [[7, 8]] * (bsz * k), [list(range(10, 14 + i % 5)) for i in range(bsz * k)], 2, 3, 0, max_length=32
    )
    joint_len = labels.size(1) + 8
    joint_ids = torch.randint(5, config.vocab_size, (bsz, k, joint_len))
    joint_ids[:, :, : labels.size(1)] = batch["input_ids"].unsqueeze(1)
    out = model(
        **batch,
        labels=labels,
        candidate_input_ids=candidates["input_ids"].view(bsz, k, -1),
        candidate_attention_mask=candidates["attention_mask"].view(bsz, k, -1),
        candidate_token_type_ids=candidates["token_type_ids"].view(bsz, k, -1),
        joint_input_ids=joint_ids,
    )
    # The same computation with the reference building blocks.
    query = model.embedder(**batch).projected_score
    cand = model.embedder(**{k_: v for k_, v in candidates.items()}).projected_score.view(bsz, k, -1)
    relevance = torch.einsum("bd,bkd->bk", query, cand)
    torch.testing.assert_close(out.relevance_score, relevance, atol=1e-5, rtol=0)
    encoder = RealmKnowledgeAugEncoder(config).eval()
    encoder.load_state_dict(model.encoder.state_dict())
    padded_labels = torch.full((bsz, joint_len), -100)
    padded_labels[:, : labels.size(1)] = labels
    logits = encoder(joint_ids).logits
    expected = marginal_mlm_loss(logits, relevance, padded_labels, mlm_mask=padded_labels != -100)
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=0)
    assert out.masked_lm_correct.numel() == int((labels != -100).sum())


def test_pretraining_retrieves_excludes_source_and_backpropagates(synthetic_tokenizer, knowledge, corpus):
    model = model_with_retriever(synthetic_tokenizer, corpus)
    config = model.config
    batch, labels, doc_ids = masked_batch(synthetic_tokenizer, knowledge)
    out = model(**batch, labels=labels, doc_ids=doc_ids)
    ids = out.retrieved_block_ids
    assert ids.shape == (3, config.num_candidates)
    assert (ids[:, 0] == -1).all() and (ids[:, 1:] >= 0).all()
    source = np.asarray(corpus["doc_id"])
    for row, doc in zip(ids[:, 1:].tolist(), doc_ids.tolist()):
        assert doc not in source[row].tolist()
        assert len(set(row)) == len(row)
    assert 0 < out.null_document_probability < 1 and out.retrieval_utility is not None
    out.loss.backward()
    for name in ("embedder.cls.dense.weight", "embedder.realm.encoder.layer.0.attention.self.query.weight",
                 "encoder.realm.encoder.layer.1.output.dense.weight", "encoder.cls.predictions.transform.dense.weight"):  # fmt: skip
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_pretraining_without_null_document_and_separate_towers(synthetic_tokenizer, knowledge, corpus):
    config = synthetic_config(synthetic_tokenizer, use_null_document=False, share_query_embedder=False)
    model = RealmForPreTraining(config)
    assert model.query_embedder is not model.embedder
    embeddings = embed_corpus(model.embedder, corpus, synthetic_tokenizer, show_progress=False)
    model.set_retriever(RealmRetriever(RealmIndex.build(corpus, embeddings, show_progress=False), synthetic_tokenizer))
    batch, labels, doc_ids = masked_batch(synthetic_tokenizer, knowledge)
    out = model(**batch, labels=labels, doc_ids=doc_ids)
    assert (out.retrieved_block_ids >= 0).all() and out.null_document_probability is None
    out.loss.backward()
    assert model.query_embedder.cls.dense.weight.grad.abs().sum() > 0
    assert model.embedder.cls.dense.weight.grad.abs().sum() > 0


def test_pretraining_save_and_reload(tmp_path, synthetic_tokenizer):
    model = RealmForPreTraining(synthetic_config(synthetic_tokenizer)).eval()
    model.save_pretrained(tmp_path)
    reloaded = RealmForPreTraining.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert reloaded.encoder.cls.predictions.decoder.weight is reloaded.encoder.realm.embeddings.word_embeddings.weight


def test_pretraining_bad_inputs(synthetic_tokenizer, knowledge):
    model = RealmForPreTraining(synthetic_config(synthetic_tokenizer))
    batch, labels, _ = masked_batch(synthetic_tokenizer, knowledge)
    with pytest.raises(ValueError, match="needs a retriever"):
        model(**batch, labels=labels)
    with pytest.raises(ValueError, match="joint_input_ids"):
        model(**batch, candidate_input_ids=torch.ones(3, 2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="no masked token"):
        model(
            **batch,
            labels=torch.full_like(labels, -100),
            candidate_input_ids=torch.ones(3, 2, 5, dtype=torch.long),
            joint_input_ids=torch.ones(3, 2, labels.size(1) + 2, dtype=torch.long),
        )


def test_embed_corpus_matches_embedder_and_resumes(tmp_path, synthetic_tokenizer, corpus, monkeypatch):
    torch.manual_seed(0)
    model = RealmForPreTraining(synthetic_config(synthetic_tokenizer))
    embedder = model.embedder.eval()
    embeddings = embed_corpus(embedder, corpus, synthetic_tokenizer, batch_size=4, chunk_size=6, show_progress=False)
    assert embeddings.shape == (len(corpus), embedder.config.retriever_proj_size)
    for row in (0, 5, len(corpus) - 1):
        inputs = document_tower_inputs(
            [corpus[row]["title_token_ids"]], [corpus[row]["token_ids"]], 2, 3, 0, max_length=48
        )
        expected = embedder(**inputs).projected_score[0].detach().numpy()
        np.testing.assert_allclose(embeddings[row], expected, atol=1e-5)

    out = tmp_path / "chunks"
    first = embed_corpus(embedder, corpus, synthetic_tokenizer, chunk_size=6, output_dir=out, show_progress=False)
    np.testing.assert_allclose(first, embeddings, atol=1e-5)
    chunk_files = sorted(out.glob("chunk-*.npy"))
    assert len(chunk_files) == -(-len(corpus) // 6)
    chunk_files[1].unlink()
    calls = []
    original_forward = type(embedder).forward

    def counting_forward(self, *args, **kwargs):
        calls.append(kwargs.get("input_ids", args[0] if args else None).shape[0])
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(type(embedder), "forward", counting_forward)
    resumed = embed_corpus(embedder, corpus, synthetic_tokenizer, chunk_size=6, output_dir=out, show_progress=False)
    assert sum(calls) == 6  # only the missing chunk was recomputed
    np.testing.assert_array_equal(resumed, first)


def test_embed_corpus_batches_blocks_of_similar_length(synthetic_tokenizer, corpus, monkeypatch):
    torch.manual_seed(0)
    embedder = RealmForPreTraining(synthetic_config(synthetic_tokenizer)).embedder.eval()
    one_at_a_time = embed_corpus(embedder, corpus, synthetic_tokenizer, batch_size=1, show_progress=False)
    shapes = []
    original_forward = type(embedder).forward

    def recording_forward(self, *args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(type(embedder), "forward", recording_forward)
    batched = embed_corpus(embedder, corpus, synthetic_tokenizer, batch_size=4, chunk_size=10, show_progress=False)
    np.testing.assert_allclose(batched, one_at_a_time, atol=1e-5)  # rows come back in corpus order
    lengths = [3 + len(t) + len(b) for t, b in zip(corpus["title_token_ids"], corpus["token_ids"])]
    # Per chunk, the batches are the rows sorted by length, longest first: only that padding is computed.
    expected = []
    for start in range(0, len(lengths), 10):
        ordered = sorted(lengths[start : start + 10], reverse=True)
        expected += [(len(ordered[i : i + 4]), ordered[i]) for i in range(0, len(ordered), 4)]
    assert shapes == expected
    consecutive = sum(len(lengths[i : i + 4]) * max(lengths[i : i + 4]) for i in range(0, len(lengths), 4))
    assert sum(rows * width for rows, width in shapes) < consecutive


def test_shuffled_corpus_is_read_in_dataset_order(synthetic_tokenizer, corpus):
    model = RealmForPreTraining(synthetic_config(synthetic_tokenizer))
    shuffled = corpus.shuffle(seed=0)
    expected = embed_corpus(model.embedder, corpus, synthetic_tokenizer, show_progress=False)
    order = np.asarray(shuffled["doc_id"])
    np.testing.assert_allclose(
        embed_corpus(model.embedder, shuffled, synthetic_tokenizer, show_progress=False), expected[order], atol=1e-5
    )
    index = RealmIndex.build(shuffled, np.zeros((len(shuffled), 16), np.float32), show_progress=False)
    values, offsets = RealmRetriever(index, synthetic_tokenizer).block_token_ids(np.array([0]))
    assert values[offsets[0] : offsets[1]].tolist() == list(shuffled[0]["token_ids"])


def test_pretraining_with_the_hf_trainer_and_the_refresh_callback(tmp_path, synthetic_tokenizer, knowledge, corpus):
    """The Trainer path: RealmForPreTraining + DataCollatorForRealmPreTraining + IndexRefreshCallback."""
    from realm_hf import IndexRefreshCallback, IndexRefreshSchedule

    model = model_with_retriever(synthetic_tokenizer, corpus)
    retriever = model.retriever
    embeddings = np.asarray(retriever.index.embeddings)
    callback = IndexRefreshCallback(retriever, synthetic_tokenizer, IndexRefreshSchedule(every_n_steps=2))
    trainer = pretraining_trainer(tmp_path, model, synthetic_tokenizer, knowledge, [callback])
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert [record["weights_step"] for record in callback.history] == [2, 4]
    # The index in service is the corpus embedded by the trained document tower (refreshed at the last step).
    model.eval()
    fresh = embed_corpus(model.embedder, corpus, synthetic_tokenizer, show_progress=False)
    np.testing.assert_allclose(np.asarray(retriever.index.embeddings), fresh, atol=1e-4)
    assert not np.allclose(np.asarray(embeddings), fresh, atol=1e-4)
    # The end of training saves the model the HF way, with the index in service, and the sub-models.
    from transformers import AutoModelForPreTraining

    from realm_hf import RealmScorer

    final = AutoModelForPreTraining.from_pretrained(tmp_path / "final")
    assert all(torch.equal(final.state_dict()[k], v) for k, v in model.state_dict().items())
    saved = RealmRetriever.from_pretrained(tmp_path / "final")
    np.testing.assert_array_equal(np.asarray(saved.index.embeddings), np.asarray(retriever.index.embeddings))
    assert type(RealmScorer.from_pretrained(tmp_path / "submodels" / "scorer")) is RealmScorer


def test_trainer_path_with_an_external_index_builder(tmp_path, synthetic_tokenizer, knowledge, corpus):
    """IndexRefreshCallback(external=True): the Trainer exports its document tower every 2 steps, a builder (here a
    thread running `run_index_builder`) publishes an index, and the callback swaps it in at a later step."""
    import threading

    from transformers import TrainerCallback

    from realm_hf import IndexRefreshCallback, IndexRefreshSchedule
    from realm_hf.retrieval.refresh import published_index_steps
    from realm_hf.training.index_builder import run_index_builder

    model = model_with_retriever(synthetic_tokenizer, corpus)
    retriever = model.retriever
    indexes = tmp_path / "indexes"
    callback = IndexRefreshCallback(
        retriever, synthetic_tokenizer, IndexRefreshSchedule(every_n_steps=2), save_dir=str(indexes), external=True
    )

    class WaitForTheBuilder(TrainerCallback):  # runs before the refresh callback: step 3 finds the index of step 2
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                deadline = time.monotonic() + 120
                while max(published_index_steps(indexes)) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)

    builder = threading.Thread(target=run_index_builder, args=(tmp_path,), kwargs={"poll_seconds": 0.05,
                               "max_builds": 1}, daemon=True)  # fmt: skip
    builder.start()
    trainer = pretraining_trainer(tmp_path, model, synthetic_tokenizer, knowledge, [WaitForTheBuilder(), callback])
    trainer.train()
    builder.join(timeout=60)
    assert [record["weights_step"] for record in callback.history] == [2]
    assert callback.history[0]["step"] == 3 and published_index_steps(indexes)[0] == 0


def test_retrieval_posterior_is_the_gradient_of_the_retrieval_logits(synthetic_tokenizer, knowledge, corpus):
    model = model_with_retriever(synthetic_tokenizer, corpus)
    config = model.config
    batch, labels, doc_ids = masked_batch(synthetic_tokenizer, knowledge)
    out = model(**batch, labels=labels, doc_ids=doc_ids)
    posterior = out.retrieval_posterior
    assert posterior.shape == (3, config.num_candidates) and not posterior.requires_grad
    torch.testing.assert_close(posterior.sum(-1), torch.ones(3))
    # d loss / d relevance = (prior - posterior) * (masked tokens of the row) / (all masked tokens)
    relevance = out.relevance_score
    relevance.retain_grad()
    out.loss.backward()
    tokens = (labels != -100).sum(-1, keepdim=True).float()
    expected = (relevance.detach().softmax(-1) - posterior) * tokens / tokens.sum()
    torch.testing.assert_close(relevance.grad, expected, atol=1e-6, rtol=1e-4)


def test_pretraining_inputs_of_given_blocks_equal_the_retrieved_ones(synthetic_tokenizer, knowledge, corpus):
    model = model_with_retriever(synthetic_tokenizer, corpus)
    retriever = model.retriever
    batch, _, doc_ids = masked_batch(synthetic_tokenizer, knowledge)
    query = model.embedder(**batch).projected_score.detach()
    tokens = retriever.question_token_ids(batch["input_ids"], batch["attention_mask"])
    retrieved = retriever.retrieve_for_pretraining(query, tokens, exclude_doc_ids=doc_ids, num_candidates=4)
    again = retriever.pretraining_inputs(retrieved["retrieved_block_ids"], tokens)
    assert retrieved.keys() == again.keys()
    for key in retrieved:
        torch.testing.assert_close(again[key], retrieved[key])
    with pytest.raises(ValueError, match="out of range"):
        retriever.pretraining_inputs([[len(corpus)]] * 3, tokens)
    with pytest.raises(ValueError, match="batch_size=3"):
        retriever.pretraining_inputs([[0, 1]], tokens)


def test_parameter_groups_decay_matrices_only_and_give_prefixes_their_rate():
    from realm_hf.training.optimization import parameter_groups

    model = RealmForPreTraining(RealmConfig(**tiny_config_kwargs()))
    model.encoder.requires_grad_(False)
    groups = parameter_groups(model, 1e-3, 0.01, {"embedder.": 1e-4})
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert not any(name.startswith("encoder.") for name in grouped)  # frozen parameters are left out
    assert grouped and all(lr == 1e-4 for name, (lr, _) in grouped.items() if name.startswith("embedder."))
    for name, (_, decay) in grouped.items():
        no_decay = "LayerNorm" in name or name.endswith("bias")
        assert decay == (0.0 if no_decay else 0.01), name


def test_checkpoints_are_saved_without_the_shared_tensor_warning(tmp_path, caplog):
    import logging

    from realm_hf.demo.job import DemoArguments, run_demo

    with caplog.at_level(logging.WARNING):
        run_demo(DemoArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, ict_steps=0, reading_steps=0, per_device_train_batch_size=4, num_people=4,
        num_cities=2, eval_steps=2, num_eval_facts=4, hidden_size=32, num_hidden_layers=2, disable_tqdm=True,
        ))  # fmt: skip
    assert (tmp_path / "run" / "checkpoint-2").is_dir()
    assert "Removed shared tensor" not in caplog.text


@pytest.mark.parametrize("with_titles", [True, False])
@pytest.mark.parametrize(
    "embedder_config",
    [{}, {"embedder_single_segment": True}, {"embedder_pooling": "mean"}],
    ids=["cls_two_segments", "single_segment", "mean_pooling"],
)
def test_relevance_scores_equal_the_index_inner_products_after_a_refresh(
    knowledge, synthetic_tokenizer, with_titles, embedder_config
):
    """The document-tower inputs the model rebuilds for its candidates are those the index embedded: right after the
    index is rebuilt, the relevance score of every retrieved block is the index's inner product for it, with titles
    or without, and in every embedder configuration that changes how the document input is read. Blocks and titles
    are longer than `block_seq_len`, so the truncation must agree too."""
    documents = knowledge.documents if with_titles else knowledge.documents.remove_columns("title")
    corpus = tokenize_blocks(documents, synthetic_tokenizer)
    assert max(map(len, corpus["token_ids"])) > 20
    torch.manual_seed(0)
    # A wider initialisation than the default, so that the projected embeddings depend clearly on their input.
    config = synthetic_config(synthetic_tokenizer, block_seq_len=20, initializer_range=0.5, **embedder_config)
    model = RealmForPreTraining(config).eval()
    embeddings = embed_corpus(model.embedder, corpus, synthetic_tokenizer, batch_size=8, show_progress=False)
    index = RealmIndex.build(corpus, embeddings, show_progress=False)
    model.set_retriever(RealmRetriever(index, synthetic_tokenizer))
    batch, labels, doc_ids = masked_batch(synthetic_tokenizer, knowledge)
    with torch.no_grad():
        out = model(**batch, labels=labels, doc_ids=doc_ids)
        query = model.query_embedder(**batch).projected_score
    block_ids = out.retrieved_block_ids
    real = block_ids >= 0
    assert real.sum() >= block_ids.size(0) * (model.config.num_candidates - 1)
    index_scores = torch.einsum("bd,bkd->bk", query, torch.from_numpy(index.get_embeddings(block_ids.clamp_min(0))))
    torch.testing.assert_close(out.relevance_score[real], index_scores[real], rtol=1e-4, atol=1e-4)


def test_open_qa_model_from_pretraining_keeps_the_retriever_and_reads_with_the_encoder(
    knowledge, synthetic_tokenizer, corpus, tmp_path, caplog
):
    """`RealmForOpenQA.from_pretraining`: the same query tower and index (same top-k for the same questions), the
    reader's encoder weights are the knowledge-augmented encoder's, the span scorer is new and said to be; from a
    model or from its saved directory."""
    import logging

    from realm_hf import RealmForOpenQA

    pretrained = model_with_retriever(synthetic_tokenizer, corpus).eval()
    with caplog.at_level(logging.WARNING, logger="realm_hf.modeling_realm"):
        bridged = RealmForOpenQA.from_pretraining(pretrained).eval()
    assert "qa_outputs.dense_output.weight" in caplog.text
    assert bridged.retriever is pretrained.retriever
    encoder_weights = pretrained.encoder.state_dict()
    for name, tensor in bridged.reader.state_dict().items():
        if not name.startswith("qa_outputs."):
            assert torch.equal(tensor, encoder_weights[name]), name
    questions = synthetic_tokenizer(
        [f"where was {' '.join(sentence.split()[:2])} born?" for sentence in knowledge.facts["sentence"][:6]],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        before = pretrained.query_embedder(**questions).projected_score
        after = bridged.embedder(**questions).projected_score
    index = pretrained.retriever.index
    np.testing.assert_array_equal(index.search(before, 3)[1], index.search(after, 3)[1])
    with torch.no_grad():
        output = bridged(**{k: v[:1] for k, v in questions.items()})
    assert output.predicted_answer_ids.dim() == 1

    pretrained.save_pretrained(tmp_path / "pretrained")
    reloaded = RealmForOpenQA.from_pretraining(str(tmp_path / "pretrained"), retriever=pretrained.retriever)
    assert torch.equal(reloaded.embedder.cls.dense.weight, bridged.embedder.cls.dense.weight)


@pytest.mark.parametrize("final_index_refresh", [True, False])
def test_the_final_model_holds_its_own_index_and_a_stale_one_is_refused(
    tmp_path, synthetic_tokenizer, knowledge, corpus, final_index_refresh
):
    """Trained with an index never refreshed, `final/` gets the index its final document tower builds (one more
    pass); without that pass the saved index is stale, and `load_realm` and `RealmForOpenQA.from_pretraining` refuse
    it unless told to accept it."""
    from realm_hf import (
        DataCollatorForRealmPreTraining,
        RealmForOpenQA,
        RealmPreTrainingArguments,
        build_index,
        train_realm,
    )
    from realm_hf.hub.publish import load_realm
    from realm_hf.training.masking import tag_salient_spans

    model = model_with_retriever(synthetic_tokenizer, corpus)
    index = build_index(corpus, model.embedder, synthetic_tokenizer, show_progress=False)  # records the fingerprint
    model.set_retriever(RealmRetriever(index, synthetic_tokenizer))
    args = RealmPreTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
        index_refresh_steps=0, final_index_refresh=final_index_refresh, use_cpu=True, disable_tqdm=True,
        save_submodels=False,
    )  # fmt: skip
    sentences = tag_salient_spans(knowledge.documents, synthetic_tokenizer)
    collator = DataCollatorForRealmPreTraining(synthetic_tokenizer, max_length=32, seed=0)
    train_realm(model, synthetic_tokenizer, model.retriever.index, sentences, collator, args)
    final = tmp_path / "run" / "final"
    if final_index_refresh:
        loaded, _, retriever = load_realm(final)
        assert retriever.index.check_embedder(loaded.embedder)
        RealmForOpenQA.from_pretraining(loaded)
        return
    with pytest.raises(ValueError, match="stale index"):
        load_realm(final)
    loaded, _, retriever = load_realm(final, allow_stale_index=True)
    assert not retriever.index.check_embedder(loaded.embedder)
    with pytest.raises(ValueError, match="stale index"):
        RealmForOpenQA.from_pretraining(loaded)
    RealmForOpenQA.from_pretraining(loaded, allow_stale_index=True)
