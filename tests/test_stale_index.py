"""Pre-training with a stale index: query-side training, snapshot search and over-retrieve-and-re-rank."""

import numpy as np
import pytest
import torch

from realm_hf import DataCollatorForRealmPreTraining, RealmPreTrainingArguments, build_index, train_realm
from realm_hf.demo.job import masked_facts
from realm_hf.hub.publish import load_realm
from realm_hf.retrieval.refresh import QUERY_SNAPSHOT_DIR
from realm_hf.retrieval.retriever import RealmRetriever
from realm_hf.retrieval.stale_index import StaleIndexRetriever
from realm_hf.training.masking import tag_salient_spans
from realm_hf.training.retrieval_strategy import apply_retrieval_strategy, check_retrieval_strategy

from .utils import pretraining_trainer, synthetic_config


def _model_and_index(tokenizer, corpus):
    from realm_hf.modeling_realm import RealmForPreTraining

    torch.manual_seed(0)
    model = RealmForPreTraining(synthetic_config(tokenizer))
    return model, build_index(corpus, model.embedder, tokenizer, show_progress=False)


def _perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of `module` with every weight moved (another point of training)."""
    import copy

    other = copy.deepcopy(module)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=generator))
    return other


def _queries(tokenizer, knowledge, model, rows=range(8)):
    data = masked_facts(tokenizer, knowledge.facts.select(list(rows)))
    with torch.no_grad():
        query = model.query_embedder(
            input_ids=data["input_ids"], attention_mask=data["attention_mask"], token_type_ids=data["token_type_ids"]
        ).projected_score
    return data, query


def test_rerank_keeps_what_a_fresh_index_would_retrieve(synthetic_tokenizer, knowledge, corpus):
    """Over-retrieving every block from a stale index and re-ranking with the live document tower retrieves exactly
    what searching an index re-embedded by that tower retrieves (the source document excluded, null document first);
    the stale index alone retrieves something else."""
    model, stale_index = _model_and_index(synthetic_tokenizer, corpus)
    model.embedder = _perturbed(model.embedder, seed=1)  # the document tower moved on; the index did not
    data, query = _queries(synthetic_tokenizer, knowledge, model)
    token_ids = RealmRetriever(stale_index, synthetic_tokenizer).question_token_ids(
        data["input_ids"], data["attention_mask"]
    )
    fresh = RealmRetriever(
        build_index(corpus, model.embedder, synthetic_tokenizer, show_progress=False), synthetic_tokenizer
    )
    stale = RealmRetriever(stale_index, synthetic_tokenizer)
    reranking = StaleIndexRetriever(
        stale_index, synthetic_tokenizer, document_tower=model.embedder, rerank_candidates=len(corpus)
    )
    kwargs = dict(exclude_doc_ids=data["doc_ids"], num_candidates=4, max_block_length=48)
    expected = fresh.retrieve_for_pretraining(query, token_ids, **kwargs)["retrieved_block_ids"]
    got = reranking.retrieve_for_pretraining(query, token_ids, **kwargs)
    torch.testing.assert_close(got["retrieved_block_ids"], expected)
    assert (got["retrieved_block_ids"][:, 0] == -1).all()
    assert not torch.equal(stale.retrieve_for_pretraining(query, token_ids, **kwargs)["retrieved_block_ids"], expected)
    # The inputs are the wrapped retriever's for those blocks.
    again = stale.pretraining_inputs(expected, token_ids, 48)
    for key, value in again.items():
        torch.testing.assert_close(got[key], value)


def test_snapshot_search_uses_the_query_tower_of_the_index(synthetic_tokenizer, knowledge, corpus):
    """With a snapshot, the index is searched with the snapshot's embeddings of the masked sentences, whatever the live
    query embeddings are; with no snapshot it is the plain retriever."""
    model, index = _model_and_index(synthetic_tokenizer, corpus)
    data, snapshot_query = _queries(synthetic_tokenizer, knowledge, model)
    live_query = torch.randn_like(snapshot_query)  # the live tower moved far away
    plain = RealmRetriever(index, synthetic_tokenizer)
    token_ids = plain.question_token_ids(data["input_ids"], data["attention_mask"])
    kwargs = dict(exclude_doc_ids=data["doc_ids"], num_candidates=4, max_block_length=48)
    snapshot = StaleIndexRetriever(index, synthetic_tokenizer, search_query_tower=model.query_embedder)
    torch.testing.assert_close(
        snapshot.snapshot_query_embeddings(token_ids), snapshot_query, atol=1e-5, rtol=1e-5
    )  # the sentence rebuilt from its token ids embeds as the model's input does
    got = snapshot.retrieve_for_pretraining(live_query, token_ids, **kwargs)["retrieved_block_ids"]
    expected = plain.retrieve_for_pretraining(snapshot_query, token_ids, **kwargs)["retrieved_block_ids"]
    torch.testing.assert_close(got, expected)
    assert not torch.equal(got, plain.retrieve_for_pretraining(live_query, token_ids, **kwargs)["retrieved_block_ids"])
    no_snapshot = StaleIndexRetriever(index, synthetic_tokenizer)
    torch.testing.assert_close(
        no_snapshot.retrieve_for_pretraining(live_query, token_ids, **kwargs)["retrieved_block_ids"],
        plain.retrieve_for_pretraining(live_query, token_ids, **kwargs)["retrieved_block_ids"],
    )
    # The wrapper is a retriever: the index is the wrapped one's, and setting it sets the wrapped one's.
    assert isinstance(snapshot, RealmRetriever) and snapshot.index is index


def _train(tmp_path, tokenizer, knowledge, model, index, **overrides):
    settings = dict(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2, use_cpu=True,
        disable_tqdm=True, save_submodels=False, logging_steps=1,
    )  # fmt: skip
    args = RealmPreTrainingArguments(**{**settings, **overrides})
    sentences = tag_salient_spans(knowledge.documents, tokenizer)
    collator = DataCollatorForRealmPreTraining(tokenizer, max_length=32, seed=0)
    return train_realm(model, tokenizer, index, sentences, collator, args)


def test_query_side_training_freezes_the_document_tower_and_never_refreshes(
    tmp_path, synthetic_tokenizer, knowledge, corpus
):
    """`retriever_training="query_side"`: the towers are untied, only the query tower and the encoder train, the index
    built once is never refreshed (it stays the document tower's own, so `final/` loads without a stale-index
    refusal), and the saved model keeps two towers."""
    model, index = _model_and_index(synthetic_tokenizer, corpus)
    document_tower = {k: v.clone() for k, v in model.embedder.state_dict().items()}
    history = _train(
        tmp_path / "run", synthetic_tokenizer, knowledge, model, index, retriever_training="query_side",
        index_refresh_steps=1,
    )  # fmt: skip
    assert not model.config.share_query_embedder and "query_embedder" in model._modules
    assert all(torch.equal(v, model.embedder.state_dict()[k]) for k, v in document_tower.items())
    assert any(not torch.equal(v, model.query_embedder.state_dict()[k]) for k, v in document_tower.items())
    assert not any("index_refresh_seconds" in record for record in history)
    assert all(record["index_staleness"] == 0 for record in history)
    assert model.retriever.index is index
    loaded, _, retriever = load_realm(tmp_path / "run" / "final")
    assert not loaded.config.share_query_embedder
    assert retriever.index.check_embedder(loaded.embedder)
    torch.testing.assert_close(loaded.query_embedder.state_dict(), model.query_embedder.state_dict())


def test_snapshot_search_swaps_the_query_snapshot_with_each_index_and_resumes_with_it(
    tmp_path, synthetic_tokenizer, knowledge, corpus
):
    """`index_search="snapshot"` with a refresh every 2 steps: each index comes with the query tower of the step whose
    weights embedded it; it is saved with the index and loaded back when the run resumes."""
    model, index = _model_and_index(synthetic_tokenizer, corpus)
    initial_query_tower = {k: v.clone() for k, v in model.query_embedder.state_dict().items()}
    seen = {}

    def record_snapshot(model, retriever, step):
        seen[step] = {k: v.clone() for k, v in retriever.search_query_tower.state_dict().items()}
        seen[f"live-{step}"] = {k: v.clone() for k, v in model.query_embedder.state_dict().items()}
        return {}

    args = dict(index_search="snapshot", index_refresh_steps=2, save_steps=3, eval_steps=1)
    settings = dict(
        output_dir=str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
        use_cpu=True, disable_tqdm=True, save_submodels=False, logging_steps=1, **args,
    )  # fmt: skip
    sentences = tag_salient_spans(knowledge.documents, synthetic_tokenizer)
    collator = DataCollatorForRealmPreTraining(synthetic_tokenizer, max_length=32, seed=0)
    train_realm(model, synthetic_tokenizer, index, sentences, collator, RealmPreTrainingArguments(**settings),
                eval_fn=record_snapshot)  # fmt: skip
    assert isinstance(model.retriever, StaleIndexRetriever)
    torch.testing.assert_close(seen[1], initial_query_tower)  # step 1: the initial index, its own query tower
    torch.testing.assert_close(seen[2], seen["live-2"])  # refreshed at step 2 with the weights of step 2
    torch.testing.assert_close(seen[3], seen["live-2"])  # still the index of step 2 at step 3
    assert any(not torch.equal(v, seen["live-3"][k]) for k, v in seen[3].items())
    saved = tmp_path / "run" / "indexes" / "step-2" / QUERY_SNAPSHOT_DIR
    assert (saved / "model.safetensors").is_file()

    # Resuming the checkpoint of step 3 (trained with the index of step 2), with no more refreshes, searches with
    # that index's query tower, read back from disk.
    snapshot_of_step_2 = seen[2]
    resumed, _ = _model_and_index(synthetic_tokenizer, corpus)
    seen.clear()
    settings.update(max_steps=4, resume_from_checkpoint="latest", index_refresh_steps=0)
    train_realm(resumed, synthetic_tokenizer, index, sentences, collator, RealmPreTrainingArguments(**settings),
                eval_fn=record_snapshot)  # fmt: skip
    torch.testing.assert_close(seen[4], snapshot_of_step_2)
    assert any(not torch.equal(v, seen["live-4"][k]) for k, v in seen[4].items())


def test_rerank_pretraining_runs_and_reranks_with_the_live_tower(tmp_path, synthetic_tokenizer, knowledge, corpus):
    """`rerank_candidates`: train_realm wraps the retriever to re-rank with the model's own (live) document tower."""
    model, index = _model_and_index(synthetic_tokenizer, corpus)
    history = _train(tmp_path / "run", synthetic_tokenizer, knowledge, model, index, rerank_candidates=12,
                     index_refresh_steps=0, final_index_refresh=False)  # fmt: skip
    assert isinstance(model.retriever, StaleIndexRetriever)
    assert model.retriever.document_tower is model.embedder and model.retriever.rerank_candidates == 12
    assert np.isfinite(history[-1]["loss"]) and history[-1]["index_staleness"] == 4


def test_strategy_options_are_checked_before_training():
    with pytest.raises(ValueError, match="nothing to correct"):
        RealmPreTrainingArguments(output_dir="x", retriever_training="query_side", index_search="snapshot")
    with pytest.raises(ValueError, match="nothing to correct"):
        check_retrieval_strategy("query_side", "live", 16)
    with pytest.raises(ValueError, match="index_search must be one of"):
        RealmPreTrainingArguments(output_dir="x", index_search="stale")
    with pytest.raises(ValueError, match="retriever_training must be one of"):
        check_retrieval_strategy("document_side", "live", 0)
    with pytest.raises(ValueError, match="rerank_candidates must be >= 0"):
        check_retrieval_strategy("both", "live", -1)
    with pytest.raises(ValueError, match="live document tower"):
        StaleIndexRetriever(None, None, rerank_candidates=4)


def test_apply_retrieval_strategy_for_the_trainer_path(synthetic_tokenizer, corpus):
    model, index = _model_and_index(synthetic_tokenizer, corpus)
    plain = RealmRetriever(index, synthetic_tokenizer)
    assert apply_retrieval_strategy(model, plain, index_search="live").retriever is plain
    default = apply_retrieval_strategy(model, plain)  # 'auto': the index's own query-tower snapshot searches it
    assert isinstance(default.retriever, StaleIndexRetriever) and default.snapshot_query_tower is model.query_embedder
    strategy = apply_retrieval_strategy(model, plain, retriever_training="query_side")
    assert strategy.retriever is plain and not strategy.document_tower_trains and strategy.snapshot_query_tower is None
    assert all(p.requires_grad for p in model.query_embedder.parameters())
    model.set_retriever(strategy.retriever)  # the wrapped retriever is accepted by the model
    snapshot = apply_retrieval_strategy(
        *_model_and_index(synthetic_tokenizer, corpus)[:1], plain, index_search="snapshot"
    )
    assert snapshot.document_tower_trains and isinstance(snapshot.retriever, StaleIndexRetriever)
    model.set_retriever(snapshot.retriever)


def test_the_trainer_path_with_snapshot_search_and_with_query_side_training(
    tmp_path, synthetic_tokenizer, knowledge, corpus
):
    """The Hugging Face `Trainer` path takes the same strategies: `apply_retrieval_strategy` before the Trainer is
    made, and the callback given the query tower for snapshot search (each refreshed index comes with the query tower
    of its step); with query-side training nothing is refreshed, not even at the end, and the document tower is
    unchanged."""
    from realm_hf import IndexRefreshCallback, IndexRefreshSchedule

    def trainer(output_dir, model, callback):
        return pretraining_trainer(output_dir, model, synthetic_tokenizer, knowledge, [callback], max_steps=3,
                                   learning_rate=1e-2)  # fmt: skip

    model, index = _model_and_index(synthetic_tokenizer, corpus)
    strategy = apply_retrieval_strategy(model, RealmRetriever(index, synthetic_tokenizer), index_search="snapshot")
    model.set_retriever(strategy.retriever)
    callback = IndexRefreshCallback(strategy.retriever, synthetic_tokenizer, IndexRefreshSchedule(every_n_steps=2),
                                    query_tower=strategy.snapshot_query_tower, save_final=False)  # fmt: skip
    trainer(tmp_path / "snapshot", model, callback).train()
    assert [record["weights_step"] for record in callback.history] == [2]
    snapshot = strategy.retriever.search_query_tower
    assert snapshot is not model.query_embedder and not any(p.requires_grad for p in snapshot.parameters())
    assert any(not torch.equal(v, model.query_embedder.state_dict()[k]) for k, v in snapshot.state_dict().items())

    model, index = _model_and_index(synthetic_tokenizer, corpus)
    strategy = apply_retrieval_strategy(model, RealmRetriever(index, synthetic_tokenizer), "query_side")
    model.set_retriever(strategy.retriever)
    document_tower = {k: v.clone() for k, v in model.embedder.state_dict().items()}
    callback = IndexRefreshCallback(strategy.retriever, synthetic_tokenizer, IndexRefreshSchedule(every_n_steps=0))
    trainer(tmp_path / "query_side", model, callback).train()
    assert callback.history == [] and strategy.retriever.index is index
    torch.testing.assert_close(model.embedder.state_dict(), document_tower)
    loaded, _, retriever = load_realm(tmp_path / "query_side" / "final")
    assert retriever.index.check_embedder(loaded.embedder) and not loaded.config.share_query_embedder


@pytest.mark.parametrize("mode", ["async", "external"])
def test_the_snapshot_is_the_query_tower_of_the_step_whose_weights_embedded_the_index(
    tmp_path, synthetic_tokenizer, corpus, mode
):
    """With an asynchronous refresh or an external builder, the index of step 2 arrives at a later step; the query
    tower that searches it is the copy taken at step 2, not the one of the step it arrives at."""
    from realm_hf.retrieval.refresh import IndexRefresher, IndexRefreshSchedule
    from realm_hf.training.index_builder import build_index_from_export

    model, index = _model_and_index(synthetic_tokenizer, corpus)
    retriever = StaleIndexRetriever(index, synthetic_tokenizer)
    save_dir = tmp_path / "indexes"
    refresher = IndexRefresher(
        retriever, synthetic_tokenizer, IndexRefreshSchedule(every_n_steps=2), asynchronous=mode == "async",
        save_dir=save_dir, external=mode == "external", query_tower=model.query_embedder,
    )  # fmt: skip
    refresher.save()  # the builder takes its corpus from the index of step 0
    states = {}
    for step in (1, 2, 3):
        # Training moves the (shared) tower in place every step.
        model.embedder.load_state_dict(_perturbed(model.embedder, seed=step).state_dict())
        states[step] = {k: v.clone() for k, v in model.query_embedder.state_dict().items()}
        record = refresher.step_end(model.embedder, step)
        if step == 2:
            assert record is None  # started (async) or exported (external), not yet in service
            if mode == "async":
                refresher.background.join()  # the background refresh has ended; its result is swapped in at step 3
            else:
                build_index_from_export(save_dir, 2)
    assert refresher.index_step == 2 and record is not None and record.step == 2
    torch.testing.assert_close(retriever.search_query_tower.state_dict(), states[2])
    assert any(not torch.equal(v, states[3][k]) for k, v in retriever.search_query_tower.state_dict().items())


def test_rerank_candidates_default_follows_the_index_staleness():
    """By default a stale index is re-ranked (64), an index that never goes stale is not, and a set value wins."""
    assert RealmPreTrainingArguments(output_dir="x").rerank_candidates == 64  # refreshed every 500 steps
    assert RealmPreTrainingArguments(output_dir="x", index_refresh_steps=0).rerank_candidates == 64
    assert RealmPreTrainingArguments(output_dir="x", index_refresh_steps=1).rerank_candidates == 0
    assert RealmPreTrainingArguments(output_dir="x", retriever_training="query_side").rerank_candidates == 0
    assert RealmPreTrainingArguments(output_dir="x", rerank_candidates=0).rerank_candidates == 0
    assert RealmPreTrainingArguments(output_dir="x", index_refresh_steps=1, rerank_candidates=8).rerank_candidates == 8
    with pytest.raises(ValueError, match="nothing to correct"):
        RealmPreTrainingArguments(output_dir="x", retriever_training="query_side", rerank_candidates=64)
