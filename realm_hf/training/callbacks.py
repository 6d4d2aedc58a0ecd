"""Trainer callbacks of REALM pre-training with the Hugging Face [`~transformers.Trainer`]."""

from __future__ import annotations

from transformers import TrainerCallback

from ..hub.model_card import pretraining_card_data
from ..hub.publish import save_final_model
from ..retrieval.refresh import IndexRefresher, IndexRefreshSchedule


class IndexRefreshCallback(TrainerCallback):
    """Refreshes the retriever's index of a [`RealmForPreTraining`] trained with the HF `Trainer`, with
    [`IndexRefresher`].

    Args:
        retriever ([`RealmRetriever`]): The retriever whose index is refreshed (the model's).
        tokenizer: The corpus tokenizer.
        schedule ([`IndexRefreshSchedule`]): When to refresh.
        asynchronous (`bool`): Refresh in a background thread (swap at the first step after it finishes).
        batch_size (`int`): Blocks per forward pass when embedding.
        save_dir (`str`, *optional*): Save each refreshed index to `save_dir/step-<N>`.
        external (`bool`, *optional*, defaults to `False`): Leave embedding to a separate index builder watching
            `save_dir` (`realm-hf index-builder --watch`, with `save_dir` as its run's `indexes/`): export the
            document tower on scheduled steps and swap in the newest index it publishes.
        save_final (`bool`, *optional*, defaults to `True`): At the end of training, save the trained model the
            Hugging Face way in `<TrainingArguments.output_dir>/final` (weights, config, tokenizer, the index
            re-embedded by the final document tower when the one in service is older, a model card) and its
            sub-models in `submodels/`, as `train_realm` does ([`~realm_hf.hub.publish.save_final_model`]).
        query_tower (`torch.nn.Module`, *optional*): The live query tower, for snapshot search (the
            `snapshot_query_tower` of [`~realm_hf.training.retrieval_strategy.apply_retrieval_strategy`]; see
            [`IndexRefresher`]).

    Example, query-side training with the `Trainer` (the document tower frozen, the index never refreshed):

    ```python
    >>> strategy = apply_retrieval_strategy(model, RealmRetriever(index, tokenizer), retriever_training="query_side")
    >>> model.set_retriever(strategy.retriever)
    >>> callback = IndexRefreshCallback(strategy.retriever, tokenizer, IndexRefreshSchedule(every_n_steps=0))
    ```
    """

    def __init__(
        self,
        retriever,
        tokenizer,
        schedule: IndexRefreshSchedule | None = None,
        asynchronous: bool = False,
        batch_size: int = 128,
        save_dir: str | None = None,
        save_final: bool = True,
        external: bool = False,
        query_tower=None,
    ):
        self.save_final = save_final
        self.refresher = IndexRefresher(
            retriever,
            tokenizer,
            schedule,
            asynchronous=asynchronous,
            batch_size=batch_size,
            save_dir=save_dir,
            save_every_refresh=save_dir is not None and not external,
            external=external,
            query_tower=query_tower,
        )
        self.history: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if self.refresher.external:  # the builder takes its corpus from a published index
            self.refresher.save()
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        record = self.refresher.step_end(_unwrap(model).embedder, step)
        if record is not None:
            self.history.append({"step": step, "weights_step": record.step, "refresh_seconds": record.seconds})
        state.log_history.append({"step": step, "index_staleness": step - self.refresher.index_step})
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.refresher.wait()
        if (
            self.save_final
            and model is not None
            and self.refresher.index_step != state.global_step
            and any(p.requires_grad for p in _unwrap(model).embedder.parameters())  # else the index is current
        ):
            # The saved model's index is the one its final document tower builds.
            self.refresher.refresh_now(_unwrap(model).embedder, state.global_step)
        if self.save_final and state.is_world_process_zero and model is not None:
            card = pretraining_card_data(
                "REALM pre-trained with the Hugging Face `Trainer` and realm_hf's `IndexRefreshCallback` (marginal "
                "masked-LM loss through retrieval).",
                args,
                state.log_history,
            )
            save_final_model(args.output_dir, _unwrap(model), self.refresher.tokenizer, self.refresher.retriever, card)
        return control


def _unwrap(model):
    return getattr(model, "module", model)


__all__ = ["IndexRefreshCallback"]
