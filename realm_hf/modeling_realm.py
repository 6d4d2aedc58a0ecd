"""PyTorch REALM models.

One file holds every REALM module, following the transformers single-model-file policy. The BERT trunk is
transformers' own [`~transformers.BertModel`] (so SDPA, flash and flex attention, gradient checkpointing and output
capture come from transformers); the REALM heads are defined here with the module names of the original
transformers implementation, so its checkpoints load key for key.
"""

import copy
import logging
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import CommitInfo, HfApi
from safetensors import SafetensorError
from torch import nn
from transformers import BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLMPredictionHead, BertOnlyMLMHead
from transformers.utils import ModelOutput
from transformers.utils.hub import create_and_tag_model_card

from .configuration_realm import RealmConfig
from .file_utils import atomic_directory
from .logging import get_logger
from .ops import evidence_span_logits, use_realm_gelu_tanh
from .retrieval.index_format import INDEX_SUBFOLDER
from .retrieval.protocols import Retriever
from .retrieval.storage import check_upload_target, upload_folder


logger = get_logger(__name__)

# Keys that the published (transformers 4.16) checkpoints carry and that are buffers now.
_LEGACY_BUFFER_KEYS = [r"embeddings\.position_ids"]


# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RealmEmbedderOutput(ModelOutput):
    r"""
    Output of [`RealmEmbedder`].

    Args:
        projected_score (`torch.FloatTensor` of shape `(batch_size, config.retriever_proj_size)`):
            The retrieval embedding of each input.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Hidden states of the trunk, returned when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention weights of the trunk, returned when `output_attentions=True`.
    """

    projected_score: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class RealmScorerOutput(ModelOutput):
    r"""
    Output of [`RealmScorer`].

    Args:
        relevance_score (`torch.FloatTensor` of shape `(batch_size, num_candidates)`):
            Inner products between each query and its candidates (logits of the retrieval distribution).
        query_score (`torch.FloatTensor` of shape `(batch_size, config.retriever_proj_size)`):
            Query embeddings.
        candidate_score (`torch.FloatTensor` of shape `(batch_size, num_candidates, config.retriever_proj_size)`):
            Candidate embeddings.
    """

    relevance_score: torch.FloatTensor | None = None
    query_score: torch.FloatTensor | None = None
    candidate_score: torch.FloatTensor | None = None


@dataclass
class RealmReaderOutput(ModelOutput):
    r"""
    Output of [`RealmReader`].

    For a single question (2-D inputs) the prediction fields have the shapes of the original implementation
    (`block_idx` is a scalar, `start_pos` and `end_pos` have shape `(1,)`); for a batch of questions (3-D inputs)
    each field gains a leading `batch_size` dimension.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Retriever loss plus reader loss (averaged over questions), returned when answer labels are given.
        retriever_loss (`torch.FloatTensor`, *optional*):
            Marginal log-likelihood loss of the retriever over all `searcher_beam_size` candidates.
        reader_loss (`torch.FloatTensor`, *optional*):
            Marginal log-likelihood loss of the reader over the spans of the top `reader_beam_size` blocks.
        retriever_correct (`torch.BoolTensor` of shape `(..., searcher_beam_size)`, *optional*):
            Whether each retrieved block contains an answer.
        reader_correct (`torch.BoolTensor` of shape `(..., reader_beam_size, num_spans)`, *optional*):
            Whether each candidate span is a gold answer span.
        block_idx (`torch.LongTensor`):
            Index (within the reader beam) of the block holding the predicted answer.
        candidate (`torch.LongTensor`):
            Index of the predicted span among the enumerated candidate spans.
        start_pos (`torch.LongTensor`):
            Start token position of the predicted span in the reader input.
        end_pos (`torch.LongTensor`):
            End token position (inclusive) of the predicted span in the reader input.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Hidden states of the trunk, returned when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention weights of the trunk, returned when `output_attentions=True`.
        logits (`torch.FloatTensor` of shape `(..., reader_beam_size, num_spans)`):
            Span scores (reader logits plus the retriever logit of their block).
    """

    loss: torch.FloatTensor | None = None
    retriever_loss: torch.FloatTensor | None = None
    reader_loss: torch.FloatTensor | None = None
    retriever_correct: torch.BoolTensor | None = None
    reader_correct: torch.BoolTensor | None = None
    block_idx: torch.LongTensor | None = None
    candidate: torch.LongTensor | None = None
    start_pos: torch.LongTensor | None = None
    end_pos: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    logits: torch.FloatTensor | None = None


@dataclass
class RealmForOpenQAOutput(ModelOutput):
    r"""
    Output of [`RealmForOpenQA`].

    Args:
        reader_output (`RealmReaderOutput`):
            The reader's output (with a leading batch dimension when more than one question was given).
        predicted_answer_ids (`torch.LongTensor` or `list[torch.LongTensor]`):
            Token ids of the predicted answer: a 1-D tensor for a single question (as in the original
            implementation), a list with one 1-D tensor per question for a batch.
        retrieved_block_ids (`torch.LongTensor` of shape `(batch_size, k)`):
            Corpus ids of the retrieved blocks, best first.
        retrieved_logits (`torch.FloatTensor` of shape `(batch_size, k)`):
            Retrieval scores (query-block inner products) of the retrieved blocks.
    """

    reader_output: RealmReaderOutput | None = None
    predicted_answer_ids: torch.LongTensor | list[torch.LongTensor] | None = None
    retrieved_block_ids: torch.LongTensor | None = None
    retrieved_logits: torch.FloatTensor | None = None


@dataclass
class RealmForPreTrainingOutput(ModelOutput):
    r"""
    Output of [`RealmForPreTraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Marginal masked-LM loss `-log sum_z p(z|x) p(y_t|z,x)`, averaged over masked tokens; returned with `labels`.
        relevance_score (`torch.FloatTensor` of shape `(batch_size, num_candidates)`):
            Retrieval logits of the candidates, recomputed with the current embedders.
        retrieved_block_ids (`torch.LongTensor` of shape `(batch_size, num_candidates)`, *optional*):
            Corpus ids of the candidates (-1 for the null document), when the model retrieved them itself.
        masked_lm_correct (`torch.BoolTensor` of shape `(num_masked_tokens,)`, *optional*):
            Whether the marginal prediction at each masked token is the label.
        retrieval_utility (`torch.FloatTensor` of shape `()`, *optional*):
            Mean over masked tokens of `log p(y|x) - log p(y|null, x)` (paper, App. D), when candidate 0 is the null
            document.
        null_document_probability (`torch.FloatTensor` of shape `()`, *optional*):
            Mean retrieval probability of the null document (candidate 0), when it is among the candidates.
        retrieval_posterior (`torch.FloatTensor` of shape `(batch_size, num_candidates)`, *optional*):
            Posterior `p(z|x, y_t)` of each candidate given the masked tokens, averaged over the sentence's masked
            tokens (detached; returned with `labels`). The retrieval logits' gradient is `prior - posterior` (times
            the tokens' weights), so this shows where the masked-LM signal moves the retriever.
    """

    loss: torch.FloatTensor | None = None
    relevance_score: torch.FloatTensor | None = None
    retrieved_block_ids: torch.LongTensor | None = None
    masked_lm_correct: torch.BoolTensor | None = None
    retrieval_utility: torch.FloatTensor | None = None
    null_document_probability: torch.FloatTensor | None = None
    retrieval_posterior: torch.FloatTensor | None = None


# --------------------------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------------------------


class RealmScorerProjection(nn.Module):
    """Projection of the pooled `[CLS]` state to the retrieval space (`cls` of [`RealmEmbedder`]).

    `predictions` is an MLM head that the original checkpoints carry but the embedder never uses; it is kept so that
    their weights load without unexpected keys.
    """

    def __init__(self, config: RealmConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.dense = nn.Linear(config.hidden_size, config.retriever_proj_size)
        self.LayerNorm = nn.LayerNorm(config.retriever_proj_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden_states))


class RealmReaderProjection(nn.Module):
    """Span scorer of [`RealmReader`] (`qa_outputs`): an MLP over the sum of start and end projections."""

    def __init__(self, config: RealmConfig):
        super().__init__()
        self.config = config
        self.dense_intermediate = nn.Linear(config.hidden_size, config.span_hidden_size * 2)
        self.dense_output = nn.Linear(config.span_hidden_size, 1)
        self.layer_normalization = nn.LayerNorm(config.span_hidden_size, eps=config.reader_layer_norm_eps)
        self.relu = nn.ReLU()  # the module tree of the original implementation; `forward` applies it in place

    def span_candidates(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end positions of every span of width 1..`max_span_width`, enumerated width-major."""
        widths = range(1, min(self.config.max_span_width, seq_len) + 1)
        starts = torch.cat([torch.arange(seq_len - w + 1, device=device) for w in widths])
        ends = torch.cat([torch.arange(w - 1, seq_len, device=device) for w in widths])
        return starts, ends

    def forward(
        self, hidden_states: torch.Tensor, block_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            hidden_states (`torch.FloatTensor` of shape `(rows, seq_len, hidden_size)`)
            block_mask (`torch.Tensor` of shape `(rows, seq_len)`): 1 on evidence tokens.

        Returns:
            `(logits [rows, num_spans], starts [num_spans], ends [num_spans])`; spans with an endpoint outside the
            evidence block get the dtype's minimum.

        The logits are the MLP of the original implementation over every span, computed in a cheaper order by
        [`~realm_hf.ops.evidence_span_logits`].
        """
        starts, ends = self.span_candidates(hidden_states.size(1), hidden_states.device)
        logits = evidence_span_logits(
            hidden_states,
            block_mask,
            self.dense_intermediate,
            self.layer_normalization,
            self.dense_output,
            min(self.config.max_span_width, hidden_states.size(1)),
            num_spans=starts.numel(),
        )
        return logits, starts, ends


def _mask_to_score(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (1.0 - mask.to(dtype)) * torch.finfo(dtype).min


def _marginal_log_loss(logits: torch.Tensor, is_correct: torch.Tensor) -> torch.Tensor:
    """`-log sum_{correct} p` over the last dimension: logsumexp(all) - logsumexp(correct)."""
    log_numerator = torch.logsumexp(logits + _mask_to_score(is_correct, logits.dtype), dim=-1)
    log_denominator = torch.logsumexp(logits, dim=-1)
    return log_denominator - log_numerator


def _flatten_candidates(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Views `[batch, num_candidates, seq_len]` inputs as `[batch * num_candidates, seq_len]`."""
    if tensor is None or tensor.dim() <= 2:
        return tensor
    return tensor.reshape(-1, tensor.size(-1))


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


class RealmPreTrainedModel(PreTrainedModel):
    """Base class of the REALM models: configuration class, weight initialisation and legacy-key handling."""

    config: RealmConfig
    config_class = RealmConfig
    base_model_prefix = "realm"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _keys_to_ignore_on_load_unexpected = _LEGACY_BUFFER_KEYS
    _save_retriever = True

    def post_init(self) -> None:
        super().post_init()
        use_realm_gelu_tanh(self)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Loads a REALM checkpoint (see [`~transformers.PreTrainedModel.from_pretrained`]).

        Besides the usual behaviour it refuses a checkpoint saved from another REALM class when weights of this
        class would be left uninitialised (for example a `RealmEmbedder` checkpoint loaded as `RealmReader`), unless
        `allow_missing_weights=True`: then those weights are newly initialised and listed in a warning, as
        transformers does when it adds a head (and as the original REALM did).

        A model that retrieves ([`RealmForOpenQA`], [`RealmForPreTraining`]) comes back with its retriever when the
        directory or Hub repository holds one (`index/` and tokenizer files, as `save_pretrained` and `push_to_hub`
        of a model with a retriever write them; only those files are downloaded), unless one is passed as
        `retriever=` or `load_retriever=False`.

        Args:
            allow_missing_weights (`bool`, *optional*, defaults to `False`):
                Load a checkpoint of another REALM class, initialising the weights it lacks.
            load_retriever (`bool`, *optional*, defaults to `True`):
                Attach the retriever saved with the model ([`~realm_hf.retrieval.retriever.load_retriever_for`]).
            allow_stale_index (`bool`, *optional*, defaults to `False`):
                For [`RealmForPreTraining`]: load an index that another document tower embedded, with a warning,
                instead of refusing it.
            allow_pickle (`bool`, *optional*, defaults to `False`):
                Build the retriever of a legacy checkpoint from its `block_records.npy` (a pickle: only for files
                you trust).
        """
        retriever_options = {key: kwargs.pop(key) for key in ("allow_stale_index", "allow_pickle") if key in kwargs}
        load_retriever = kwargs.pop("load_retriever", True) and kwargs.get("retriever") is None
        allow_missing_weights = kwargs.pop("allow_missing_weights", False)
        output_loading_info = kwargs.pop("output_loading_info", False)
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)
        held = _HeldLoadReports()  # transformers' report, shown only when the load is not refused below
        try:
            with held:
                model, info = super().from_pretrained(
                    pretrained_model_name_or_path,
                    *model_args,
                    output_loading_info=True,
                    ignore_mismatched_sizes=True,
                    **kwargs,
                )
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"Refusing the weights at {pretrained_model_name_or_path!r}: the pickle in its pytorch_model.bin holds "
                f"more than tensors (weights-only loading rejected it, so none of its code ran). Details: {err}"
            ) from None
        except SafetensorError as err:
            raise ValueError(
                f"The safetensors weights at {pretrained_model_name_or_path!r} are corrupt or truncated: {err}"
            ) from None
        if info["mismatched_keys"] and not ignore_mismatched_sizes:
            details = "; ".join(
                f"{key}: checkpoint {tuple(saved)} vs model {tuple(expected)}"
                for key, saved, expected in sorted(info["mismatched_keys"])[:5]
            )
            raise ValueError(
                f"The weights at {pretrained_model_name_or_path!r} do not match the configuration "
                f"({len(info['mismatched_keys'])} tensors of another shape: {details}). Check the config.json "
                "sizes, or pass ignore_mismatched_sizes=True to re-initialise those weights."
            )
        architectures = getattr(model.config, "architectures", None) or []
        refused = bool(info["mismatched_keys"] and not ignore_mismatched_sizes) or bool(
            info["missing_keys"] and architectures and cls.__name__ not in architectures and not allow_missing_weights
        )
        if not refused:
            held.release()
        if info["missing_keys"] and architectures and cls.__name__ not in architectures:
            missing = sorted(info["missing_keys"])
            if not allow_missing_weights:
                raise ValueError(
                    f"The checkpoint at {pretrained_model_name_or_path!r} was saved from {architectures[0]}; loading "
                    f"it as {cls.__name__} leaves {len(missing)} weights uninitialised (e.g. {missing[:3]}). Load it "
                    f"with {architectures[0]}.from_pretrained instead, or pass allow_missing_weights=True to "
                    "initialise them."
                )
            logger.warning(
                f"Some weights of {cls.__name__} were not in the {architectures[0]} checkpoint at "
                f"{pretrained_model_name_or_path!r} and are newly initialised: {missing}. Train the model before "
                "using it for predictions."
            )
        if load_retriever and hasattr(model, "set_retriever"):
            from .retrieval.retriever import load_retriever_for

            hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
            model.set_retriever(
                load_retriever_for(model, pretrained_model_name_or_path, **retriever_options, **hub_kwargs)
            )
        return (model, info) if output_loading_info else model

    def save_pretrained(self, save_directory: str | os.PathLike, *args, save_retriever: bool = True, **kwargs) -> None:
        """Saves the model as [`~transformers.PreTrainedModel.save_pretrained`] does, and with it its retriever, if
        it has one (the tokenizer files and `index/`), so that `from_pretrained` of the directory and `push_to_hub`
        (one commit) carry the index too; `save_retriever=False` writes the model alone."""
        super().save_pretrained(save_directory, *args, **kwargs)
        retriever = getattr(self, "retriever", None)
        if save_retriever and self._save_retriever and retriever is not None and kwargs.get("is_main_process", True):
            if not hasattr(retriever, "save_pretrained"):
                logger.warning(f"The model's {type(retriever).__name__} has no save_pretrained: it is not saved.")
            else:
                retriever.save_pretrained(save_directory)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
        save_retriever: bool = True,
    ) -> CommitInfo:
        """Uploads the model as [`~transformers.PreTrainedModel.push_to_hub`] does (same arguments), with its
        retriever (tokenizer files and `index/`, replacing the repository's previous `index/`) in the same commit, so
        that `from_pretrained(repo_id)` and `pipeline("realm-open-qa", model=repo_id)` come back with it;
        `save_retriever=False` uploads the model alone."""
        repo_id, token = check_upload_target(repo_id, revision, create_pr, token)
        repo_id = HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id  # its card is read
        card = create_and_tag_model_card(repo_id, tags, token=token)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size, save_retriever=save_retriever)
            card.save(os.path.join(folder, "README.md"))
            with_index = os.path.isdir(os.path.join(folder, INDEX_SUBFOLDER))
            return upload_folder(
                folder, repo_id, repo_type="model", delete_patterns=[f"{INDEX_SUBFOLDER}/**"] if with_index else None,
                commit_message=commit_message or f"Upload {type(self).__name__}", commit_description=commit_description,
                revision=revision, create_pr=create_pr, private=private, token=token,
            )  # fmt: skip

    @contextmanager
    def retriever_not_saved(self) -> Iterator[None]:
        """Within the block `save_pretrained` writes the model alone, whoever calls it (training checkpoints: the
        index they were trained with is the one the run started from)."""
        self._save_retriever, previous = False, self._save_retriever
        try:
            yield
        finally:
            self._save_retriever = previous

    @staticmethod
    def _trunk_kwargs(kwargs: dict) -> dict:
        return {k: v for k, v in kwargs.items() if v is not None}


class RealmEmbedder(RealmPreTrainedModel):
    r"""
    The REALM query/document embedder: BERT followed by a linear projection of the pooled `[CLS]` state and a layer
    norm, giving `config.retriever_proj_size`-dimensional retrieval embeddings. With `config.embedder_pooling="mean"`
    the projection reads the attention-masked mean of the last hidden states instead of the pooled `[CLS]` state;
    with `config.embedder_single_segment` every token is read in segment 0 (the given `token_type_ids` are ignored).

    Example:

    ```python
    >>> import torch
    >>> from realm_hf import RealmConfig, RealmEmbedder

    >>> model = RealmEmbedder(RealmConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4))
    >>> model(torch.tensor([[2, 7, 8, 3]])).projected_score.shape
    torch.Size([1, 128])
    ```
    """

    _tied_weights_keys = {"cls.predictions.decoder.bias": "cls.predictions.bias"}

    def __init__(self, config: RealmConfig):
        super().__init__(config)
        self.realm = BertModel(config)
        self.cls = RealmScorerProjection(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> RealmEmbedderOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`):
                Token ids of `[CLS] text [SEP]` or `[CLS] title [SEP] text [SEP]`.
            attention_mask, token_type_ids, position_ids, inputs_embeds:
                As for [`~transformers.BertModel`].
            head_mask:
                Not supported by the transformers 5 BERT trunk; passing one raises an error.

        Returns:
            [`RealmEmbedderOutput`] (or a tuple when `return_dict=False`).
        """
        _reject_head_mask(head_mask)
        if self.config.embedder_single_segment and token_type_ids is not None:
            token_type_ids = torch.zeros_like(token_type_ids)
        outputs = self.realm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **self._trunk_kwargs(
                {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
            ),
        )
        output = RealmEmbedderOutput(
            projected_score=self.cls(self._pool(outputs, attention_mask)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if _use_return_dict(return_dict, self.config) else output.to_tuple()

    def _pool(self, outputs, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The sequence summary fed to the projection, per `config.embedder_pooling`."""
        if self.config.embedder_pooling == "cls":
            return outputs.pooler_output
        hidden = outputs.last_hidden_state
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class RealmScorer(RealmPreTrainedModel):
    r"""
    Scores candidate documents for queries: the inner product of the query embedding and each candidate embedding.

    Args:
        config ([`RealmConfig`]): Model configuration.
        query_embedder ([`RealmEmbedder`], *optional*):
            A separate embedder for queries. By default (`config.share_query_embedder=True`) queries and candidates
            share one embedder, which is then also reachable as `query_embedder` (and its weights are stored once,
            under `embedder.`); with `config.share_query_embedder=False` a separate tower is created.
    """

    _keys_to_ignore_on_load_unexpected = [*_LEGACY_BUFFER_KEYS, r"^query_embedder\."]

    def __init__(self, config: RealmConfig, query_embedder: RealmEmbedder | None = None):
        super().__init__(config)
        self.embedder = RealmEmbedder(config)
        if query_embedder is None and not config.share_query_embedder:
            query_embedder = RealmEmbedder(config)
        if query_embedder is not None:
            # A distinct query tower is saved under `query_embedder.` and must be loaded, not ignored.
            self._keys_to_ignore_on_load_unexpected = set(_LEGACY_BUFFER_KEYS)
            self.query_embedder = query_embedder  # nn.Module.__setattr__ registers it as a submodule
        self.post_init()

    @property
    def query_embedder(self) -> RealmEmbedder:
        """The query tower: the separate one if given at construction, else the shared `embedder`."""
        return _query_tower(self)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        candidate_input_ids: torch.LongTensor | None = None,
        candidate_attention_mask: torch.Tensor | None = None,
        candidate_token_type_ids: torch.LongTensor | None = None,
        candidate_inputs_embeds: torch.FloatTensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> RealmScorerOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`):
                Query token ids.
            candidate_input_ids (`torch.LongTensor` of shape `(batch_size, num_candidates, candidate_seq_len)`):
                Candidate token ids, for example from [`RealmTokenizer.batch_encode_candidates`].
            candidate_attention_mask, candidate_token_type_ids:
                Same shape as `candidate_input_ids`.
            candidate_inputs_embeds (`torch.FloatTensor` of shape `(batch_size * num_candidates, len, hidden)`):
                Alternative to `candidate_input_ids`.

        Returns:
            [`RealmScorerOutput`] (or a tuple when `return_dict=False`).
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("RealmScorer: you have to specify either `input_ids` or `inputs_embeds`.")
        if candidate_input_ids is None and candidate_inputs_embeds is None:
            raise ValueError(
                "RealmScorer: you have to specify either `candidate_input_ids` or `candidate_inputs_embeds`."
            )
        batch_size = input_ids.size(0) if input_ids is not None else inputs_embeds.size(0)
        if candidate_input_ids is not None:
            if candidate_input_ids.dim() != 3 or candidate_input_ids.size(0) != batch_size:
                raise ValueError(
                    "RealmScorer: `candidate_input_ids` must have shape (batch_size, num_candidates, seq_len) with "
                    f"batch_size={batch_size} (the queries' batch size), got {tuple(candidate_input_ids.shape)}."
                )
            num_candidates = candidate_input_ids.size(1)
            for name, tensor in (
                ("candidate_attention_mask", candidate_attention_mask),
                ("candidate_token_type_ids", candidate_token_type_ids),
            ):
                if tensor is not None and tensor.shape != candidate_input_ids.shape:
                    raise ValueError(
                        f"RealmScorer: `{name}` has shape {tuple(tensor.shape)} but `candidate_input_ids` has shape "
                        f"{tuple(candidate_input_ids.shape)}."
                    )
        else:
            if candidate_inputs_embeds.size(0) % batch_size != 0:
                raise ValueError(
                    f"RealmScorer: `candidate_inputs_embeds` has {candidate_inputs_embeds.size(0)} rows, not a "
                    f"multiple of the batch size {batch_size}."
                )
            num_candidates = candidate_inputs_embeds.size(0) // batch_size
        _reject_head_mask(head_mask)
        trunk_kwargs = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}

        query_score = self.query_embedder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **trunk_kwargs,
        ).projected_score
        candidate_score = self.embedder(
            input_ids=_flatten_candidates(candidate_input_ids),
            attention_mask=_flatten_candidates(candidate_attention_mask),
            token_type_ids=_flatten_candidates(candidate_token_type_ids),
            position_ids=position_ids,
            inputs_embeds=candidate_inputs_embeds,
            return_dict=True,
            **trunk_kwargs,
        ).projected_score
        candidate_score = candidate_score.view(batch_size, num_candidates, -1)
        relevance_score = torch.einsum("bd,bnd->bn", query_score, candidate_score)
        output = RealmScorerOutput(
            relevance_score=relevance_score, query_score=query_score, candidate_score=candidate_score
        )
        return output if _use_return_dict(return_dict, self.config) else output.to_tuple()


class RealmKnowledgeAugEncoder(RealmPreTrainedModel):
    r"""
    The knowledge-augmented encoder p(y | z, x) of REALM pre-training: a masked-LM over `[CLS] x [SEP] z [SEP]` for
    each retrieved document z, whose loss marginalises over the documents with the retrieval distribution p(z | x).
    The MLM decoder is tied to the input word embeddings.
    """

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "realm.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: RealmConfig):
        super().__init__(config)
        self.realm = BertModel(config)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        relevance_score: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        mlm_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, num_candidates, seq_len)` or
                `(batch_size * num_candidates, seq_len)`):
                Joint inputs `[CLS] x [SEP] z_n [SEP]`, with the query first so that label positions line up.
            relevance_score (`torch.FloatTensor` of shape `(batch_size, num_candidates)`, *optional*):
                Retrieval logits; required with `labels`.
            labels (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                MLM targets shared by the candidates of a query; -100 marks positions without a target.
            mlm_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*):
                Weights of the positions in the mean; defaults to ones (the original behaviour, in which positions
                labelled -100 count in the denominator). Pass `labels != -100` for a mean over masked tokens.

        Returns:
            [`~transformers.modeling_outputs.MaskedLMOutput`] with logits of shape
            `(batch_size * num_candidates, seq_len, vocab_size)` and, with `labels`, the marginal MLM loss.
        """
        if labels is not None and relevance_score is None:
            raise ValueError(
                "RealmKnowledgeAugEncoder: `relevance_score` is required with `labels` (the loss marginalises "
                "over the candidates with the retrieval distribution)."
            )
        _reject_head_mask(head_mask)
        joint = self.realm(
            input_ids=_flatten_candidates(input_ids),
            attention_mask=_flatten_candidates(attention_mask),
            token_type_ids=_flatten_candidates(token_type_ids),
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **self._trunk_kwargs(
                {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
            ),
        )
        prediction_scores = self.cls(joint.last_hidden_state)
        loss = None
        if labels is not None:
            loss = marginal_mlm_loss(prediction_scores, relevance_score, labels, mlm_mask)
        output = MaskedLMOutput(
            loss=loss, logits=prediction_scores, hidden_states=joint.hidden_states, attentions=joint.attentions
        )
        return output if _use_return_dict(return_dict, self.config) else output.to_tuple()


def marginal_mlm_loss(
    prediction_scores: torch.Tensor,
    relevance_score: torch.Tensor,
    labels: torch.Tensor,
    mlm_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""
    REALM's marginal masked-LM loss: `-sum_t w_t log sum_z p(z|x) p(y_t|z,x) / sum_t w_t`.

    Args:
        prediction_scores (`torch.FloatTensor` of shape `(batch_size * num_candidates, seq_len, vocab_size)`):
            MLM logits of every (query, candidate) pair, candidates of a query contiguous.
        relevance_score (`torch.FloatTensor` of shape `(batch_size, num_candidates)`):
            Retrieval logits.
        labels (`torch.LongTensor` of shape `(batch_size, seq_len)`):
            Targets, -100 where there is none.
        mlm_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*):
            Position weights; ones by default.
    """
    batch_size, seq_len = labels.shape
    if relevance_score.dim() != 2 or relevance_score.size(0) != batch_size:
        raise ValueError(
            f"relevance_score must have shape (batch_size={batch_size}, num_candidates), got "
            f"{tuple(relevance_score.shape)}."
        )
    num_candidates = relevance_score.size(1)
    if prediction_scores.shape[:2] != (batch_size * num_candidates, seq_len):
        raise ValueError(
            f"The encoder inputs have shape {tuple(prediction_scores.shape[:2])} but labels {tuple(labels.shape)} and "
            f"relevance_score {tuple(relevance_score.shape)} imply ({batch_size * num_candidates}, {seq_len})."
        )
    mlm_mask = torch.ones_like(labels, dtype=torch.float32) if mlm_mask is None else mlm_mask.to(torch.float32)
    targets = labels.tile(1, num_candidates).view(-1)
    token_log_prob = -nn.functional.cross_entropy(
        prediction_scores.view(-1, prediction_scores.size(-1)).float(), targets, reduction="none"
    ).view(batch_size, num_candidates, seq_len)
    # One row per position: its candidates' prior and gold log-probabilities (0 where the label is -100, as originally).
    prior = relevance_score.float().log_softmax(-1).repeat_interleave(seq_len, dim=0)
    gold = token_log_prob.transpose(1, 2).reshape(batch_size * seq_len, num_candidates)
    return _weighted_marginal_nll(prior, gold, mlm_mask.view(-1))[0]


def _weighted_marginal_nll(
    prior: torch.Tensor, gold: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """REALM's marginal negative log-likelihood over tokens: `-sum_t w_t log sum_z p(z|x) p(y_t|z,x) / sum_t w_t`.

    Args:
        prior (`torch.FloatTensor` of shape `(num_tokens, num_candidates)`): `log p(z|x)` of each token's candidates.
        gold (`torch.FloatTensor` of shape `(num_tokens, num_candidates)`): `log p(y_t|z,x)`.
        weights (`torch.FloatTensor` of shape `(num_tokens,)`): token weights.

    Returns:
        `(loss, marginal)`: the weighted mean (0 when the weights sum to 0) and `log p(y_t|x)` per token.
    """
    marginal = (prior + gold).logsumexp(-1)
    return -torch.nansum((marginal * weights).sum() / weights.sum()), marginal


class _HeldLoadReports(logging.Filter):
    """Holds back the LOAD REPORT that transformers logs while weights load, to show it (`release`) only when
    `from_pretrained` does not refuse the checkpoint with its own one-line reason instead."""

    _logger = logging.getLogger("transformers.modeling_utils")

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.records.append(record)
            return False
        return True

    def __enter__(self) -> "_HeldLoadReports":
        self._logger.addFilter(self)
        return self

    def __exit__(self, *exc_info) -> None:
        self._logger.removeFilter(self)

    def release(self) -> None:
        for record in self.records:
            self._logger.handle(record)
        self.records.clear()


def _checked_retriever(retriever: Retriever | None, owner: str) -> Retriever | None:
    if retriever is not None and not isinstance(retriever, Retriever):
        raise TypeError(
            f"{owner} needs a retriever with `index`, `__call__`, `question_token_ids` and `retrieve_for_pretraining` "
            f"(realm_hf.retrieval.protocols.Retriever, e.g. a RealmRetriever), got {type(retriever).__name__}."
        )
    return retriever


def _query_tower(model: nn.Module) -> "RealmEmbedder":
    separate = model._modules.get("query_embedder")
    return separate if separate is not None else model.embedder


class RealmForPreTraining(RealmPreTrainedModel):
    r"""
    REALM pre-training: masked-LM with a latent retrieval step, trained end to end through the retrieval.

    For a batch of masked sentences x, the model embeds x with the query tower, takes `config.num_candidates`
    documents z from the knowledge index (the null document first, the sentence's own document excluded), re-embeds
    them with the current document tower, so that the gradient reaches both towers through the retrieval logits
    p(z|x), and returns the marginal masked-LM loss `-log sum_z p(z|x) p(y_t|z,x)` per masked token. Vocabulary logits
    are computed at the masked positions only.

    Like RAG, `forward` also accepts already-retrieved candidates (`candidate_input_ids` and `joint_input_ids`), so the
    model runs without an index.

    Args:
        config ([`RealmConfig`]): Model configuration (`share_query_embedder`, `use_null_document`, `num_candidates`,
            `block_seq_len`).
        retriever ([`~realm_hf.retrieval.protocols.Retriever`], *optional*): Retriever over the knowledge corpus
            (a [`RealmRetriever`], or anything implementing the protocol).
    """

    def __init__(self, config: RealmConfig, retriever: Retriever | None = None):
        super().__init__(config)
        self.embedder = RealmEmbedder(config)
        if not config.share_query_embedder:
            self.query_embedder = RealmEmbedder(config)
        self.encoder = RealmKnowledgeAugEncoder(config)
        self.retriever = _checked_retriever(retriever, type(self).__name__)
        self.post_init()

    @property
    def query_embedder(self) -> RealmEmbedder:
        """The query tower: a separate one when `config.share_query_embedder=False`, else the document `embedder`."""
        return _query_tower(self)

    def set_retriever(self, retriever: Retriever | None) -> None:
        """Sets the [`RealmRetriever`] used by `forward` (for example after an index refresh)."""
        self.retriever = _checked_retriever(retriever, type(self).__name__)

    def untie_query_embedder(self) -> RealmEmbedder:
        """Gives the query tower weights of its own, a copy of the shared tower's (`config.share_query_embedder`
        becomes `False`, so the two towers are saved and loaded separately); nothing changes when they are separate
        already. Returns the query tower."""
        if "query_embedder" not in self._modules:
            self.query_embedder = copy.deepcopy(self.embedder)
            self.config.share_query_embedder = False
        return self.query_embedder

    def save_submodels(self, save_directory: str | os.PathLike, tokenizer=None) -> dict[str, Path]:
        r"""
        Saves the pre-trained sub-models in the layout of the published REALM pre-training checkpoints
        (`google/realm-cc-news-pretrained-{embedder,encoder,scorer}`), each loadable by its own class, as code
        written for those checkpoints expects:

        - `embedder/`: [`RealmEmbedder`], the query tower (the one [`RealmForOpenQA`] starts its embedder from);
        - `encoder/`: [`RealmKnowledgeAugEncoder`], the knowledge-augmented encoder (the reader's starting point);
        - `scorer/`: [`RealmScorer`] with the document tower as `embedder` (and the query tower as `query_embedder`
          when the towers are separate, `config.share_query_embedder=False`).

        The directory is written in a staging directory and swapped in whole.

        Args:
            save_directory (`str` or `os.PathLike`): The parent directory of the three sub-model directories.
            tokenizer (*optional*): Saved into each sub-model directory (the published ones ship `vocab.txt`).

        Returns:
            `dict[str, Path]`: the directory of each sub-model.
        """
        save_directory = Path(save_directory)

        def fresh(cls):  # a model of its own config: save_pretrained writes the class into `architectures`
            return cls(RealmConfig.from_dict(self.config.to_dict()))

        embedder, encoder, scorer = fresh(RealmEmbedder), fresh(RealmKnowledgeAugEncoder), fresh(RealmScorer)
        embedder.load_state_dict(self.query_embedder.state_dict())
        encoder.load_state_dict(self.encoder.state_dict())
        scorer.embedder.load_state_dict(self.embedder.state_dict())
        if not self.config.share_query_embedder:
            scorer.query_embedder.load_state_dict(self.query_embedder.state_dict())
        with atomic_directory(save_directory) as staging:
            for name, model in (("embedder", embedder), ("encoder", encoder), ("scorer", scorer)):
                model.save_pretrained(staging / name)
                if tokenizer is not None:
                    tokenizer.save_pretrained(staging / name)
        return {name: save_directory / name for name in ("embedder", "encoder", "scorer")}

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        mlm_mask: torch.Tensor | None = None,
        doc_ids: torch.LongTensor | None = None,
        candidate_input_ids: torch.LongTensor | None = None,
        candidate_attention_mask: torch.Tensor | None = None,
        candidate_token_type_ids: torch.LongTensor | None = None,
        joint_input_ids: torch.LongTensor | None = None,
        joint_attention_mask: torch.Tensor | None = None,
        joint_token_type_ids: torch.LongTensor | None = None,
        null_document_first: bool | None = None,
        return_dict: bool | None = None,
    ) -> RealmForPreTrainingOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, query_len)`):
                Masked sentences `[CLS] x [SEP]`.
            labels (`torch.LongTensor` of shape `(batch_size, query_len)`, *optional*):
                Original ids at masked positions, -100 elsewhere.
            mlm_mask (`torch.Tensor` of shape `(batch_size, query_len)`, *optional*):
                Weights of the masked positions in the mean (ones by default).
            doc_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Source document of each sentence; its blocks are never retrieved (trivial retrievals).
            candidate_input_ids (`torch.LongTensor` of shape `(batch_size, num_candidates, block_len)`, *optional*):
                Document-tower inputs `[CLS] title [SEP] block [SEP]` of already-retrieved candidates.
            joint_input_ids (`torch.LongTensor` of shape `(batch_size, num_candidates, joint_len)`, *optional*):
                Encoder inputs `[CLS] x [SEP] block [SEP]` of the same candidates; required with
                `candidate_input_ids`.
            null_document_first (`bool`, *optional*):
                Whether candidate 0 is the null document (for the diagnostics); defaults to
                `config.use_null_document` when the model retrieves, else `False`.

        Returns:
            [`RealmForPreTrainingOutput`] (or a tuple when `return_dict=False`).
        """
        if input_ids is None:
            raise ValueError("RealmForPreTraining: `input_ids` (the masked sentences) are required.")
        query = self.query_embedder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
        ).projected_score
        retrieved_block_ids = None
        if candidate_input_ids is None:
            if self.retriever is None:
                raise ValueError(
                    "RealmForPreTraining needs a retriever (`set_retriever`) or already-retrieved candidates "
                    "(`candidate_input_ids` and `joint_input_ids`)."
                )
            retrieved = self.retriever.retrieve_for_pretraining(
                query,
                self.retriever.question_token_ids(input_ids, attention_mask),
                exclude_doc_ids=doc_ids,
                num_candidates=self.config.num_candidates,
                null_document=self.config.use_null_document,
                max_block_length=self.config.block_seq_len,
            )
            device = input_ids.device
            candidate_input_ids, candidate_attention_mask, candidate_token_type_ids = (
                retrieved[f"candidate_{k}"].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")
            )
            joint_input_ids, joint_attention_mask, joint_token_type_ids = (
                retrieved[f"joint_{k}"].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")
            )
            retrieved_block_ids = retrieved["retrieved_block_ids"]
            null_document_first = self.config.use_null_document if null_document_first is None else null_document_first
        elif joint_input_ids is None:
            raise ValueError("RealmForPreTraining: `joint_input_ids` are required with `candidate_input_ids`.")
        if candidate_input_ids.dim() != 3 or candidate_input_ids.size(0) != input_ids.size(0):
            raise ValueError(
                "RealmForPreTraining: `candidate_input_ids` must have shape (batch_size, num_candidates, len) with "
                f"batch_size={input_ids.size(0)}, got {tuple(candidate_input_ids.shape)}."
            )
        if joint_input_ids.shape[:2] != candidate_input_ids.shape[:2]:
            raise ValueError(
                f"RealmForPreTraining: `joint_input_ids` {tuple(joint_input_ids.shape)} and `candidate_input_ids` "
                f"{tuple(candidate_input_ids.shape)} must agree on (batch_size, num_candidates)."
            )
        batch_size, num_candidates = candidate_input_ids.shape[:2]
        candidates = self.embedder(
            input_ids=_flatten_candidates(candidate_input_ids),
            attention_mask=_flatten_candidates(candidate_attention_mask),
            token_type_ids=_flatten_candidates(candidate_token_type_ids),
            return_dict=True,
        ).projected_score.view(batch_size, num_candidates, -1)
        relevance_score = torch.einsum("bd,bkd->bk", query, candidates)

        loss = masked_lm_correct = retrieval_utility = null_document_probability = retrieval_posterior = None
        if null_document_first:
            null_document_probability = relevance_score.detach().softmax(-1)[:, 0].mean()
        if labels is not None:
            joint_len = joint_input_ids.size(-1)
            if labels.shape != input_ids.shape or labels.size(1) > joint_len:
                raise ValueError(
                    f"RealmForPreTraining: `labels` must have the shape of `input_ids` {tuple(input_ids.shape)} and "
                    f"fit in the joint inputs (length {joint_len}), got {tuple(labels.shape)}."
                )
            hidden = self.encoder.realm(
                input_ids=_flatten_candidates(joint_input_ids),
                attention_mask=_flatten_candidates(joint_attention_mask),
                token_type_ids=_flatten_candidates(joint_token_type_ids),
            ).last_hidden_state
            hidden = hidden.view(batch_size, num_candidates, joint_len, -1)
            rows, positions = (labels != -100).nonzero(as_tuple=True)
            if rows.numel() == 0:
                raise ValueError("RealmForPreTraining: `labels` mark no masked token (all are -100).")
            # Vocabulary logits at the masked positions only: [num_masked, num_candidates, vocab].
            token_log_probs = self.encoder.cls(hidden[rows, :, positions]).float().log_softmax(-1)
            targets = labels[rows, positions]
            gold = token_log_probs.gather(-1, targets.view(-1, 1, 1).expand(-1, num_candidates, 1)).squeeze(-1)
            prior = relevance_score.float().log_softmax(-1)[rows]
            weights = gold.new_ones(rows.numel()) if mlm_mask is None else mlm_mask[rows, positions].to(gold.dtype)
            loss, marginal = _weighted_marginal_nll(prior, gold, weights)
            with torch.no_grad():
                prediction = (prior.unsqueeze(-1) + token_log_probs).logsumexp(1).argmax(-1)
                masked_lm_correct = prediction == targets
                token_posterior = (prior + gold - marginal.unsqueeze(-1)).exp()
                retrieval_posterior = token_posterior.new_zeros(batch_size, num_candidates).index_add_(
                    0, rows, token_posterior
                ) / torch.bincount(rows, minlength=batch_size).clamp_min(1).unsqueeze(-1)
                if null_document_first:
                    retrieval_utility = (marginal - gold[:, 0]).mean()
        output = RealmForPreTrainingOutput(
            loss=loss,
            relevance_score=relevance_score,
            retrieved_block_ids=retrieved_block_ids,
            masked_lm_correct=masked_lm_correct,
            retrieval_utility=retrieval_utility,
            null_document_probability=null_document_probability,
            retrieval_posterior=retrieval_posterior,
        )
        return output if _use_return_dict(return_dict, self.config) else output.to_tuple()


class RealmReader(RealmPreTrainedModel):
    r"""
    The REALM/ORQA span reader: scores every span of width up to `config.max_span_width` inside the evidence block of
    each of the top `config.reader_beam_size` retrieved blocks, adds the block's retrieval logit, and trains with the
    marginal log-likelihood of the gold spans (reader loss) and of the blocks containing an answer (retriever loss).

    Inputs are either one question (`input_ids` of shape `(reader_beam_size, seq_len)`, `relevance_score` of shape
    `(searcher_beam_size,)`, as in the original implementation) or a batch of questions (`(batch_size,
    reader_beam_size, seq_len)` and `(batch_size, searcher_beam_size)`), which runs the trunk once over all rows.
    """

    _tied_weights_keys = {"cls.predictions.decoder.bias": "cls.predictions.bias"}

    def __init__(self, config: RealmConfig):
        super().__init__(config)
        self.realm = BertModel(config)
        self.cls = BertOnlyMLMHead(config)
        self.qa_outputs = RealmReaderProjection(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        relevance_score: torch.FloatTensor | None = None,
        block_mask: torch.BoolTensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        has_answers: torch.BoolTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> RealmReaderOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `([batch_size,] reader_beam_size, seq_len)`):
                `[CLS] question [SEP] block [SEP]` rows of the top retrieved blocks.
            relevance_score (`torch.FloatTensor` of shape `([batch_size,] searcher_beam_size)`):
                Retrieval logits of all retrieved blocks, best first; the first `reader_beam_size` belong to the rows.
            block_mask (`torch.BoolTensor` of shape like `input_ids`):
                True on evidence tokens (the block, without `[SEP]` and padding).
            start_positions, end_positions (`torch.LongTensor` of shape `([batch_size,] searcher_beam_size,
                max_answers)`, *optional*):
                Gold answer spans per block, padded with -1.
            has_answers (`torch.BoolTensor` of shape `([batch_size,] searcher_beam_size)`, *optional*):
                Whether each retrieved block contains an answer.

        Returns:
            [`RealmReaderOutput`] (or a tuple when `return_dict=False`).
        """
        if relevance_score is None:
            raise ValueError("RealmReader: you have to specify `relevance_score` to calculate logits and loss.")
        if block_mask is None:
            raise ValueError(
                "RealmReader: you have to specify `block_mask` to separate the question from the evidence block."
            )
        reference = input_ids if input_ids is not None else inputs_embeds[..., 0]
        single = reference.dim() == 2
        if single:
            input_ids, attention_mask, token_type_ids, block_mask, inputs_embeds = (
                t.unsqueeze(0) if t is not None else None
                for t in (input_ids, attention_mask, token_type_ids, block_mask, inputs_embeds)
            )
            relevance_score = relevance_score.unsqueeze(0)
            start_positions, end_positions, has_answers = (
                t.unsqueeze(0) if t is not None else None for t in (start_positions, end_positions, has_answers)
            )
        rows_ids = input_ids if input_ids is not None else inputs_embeds[..., 0]
        batch_size, num_rows, seq_len = rows_ids.shape
        beam = min(self.config.reader_beam_size, num_rows)
        if seq_len < self.config.max_span_width:
            raise ValueError(
                f"RealmReader: the input sequence length ({seq_len}) must be >= config.max_span_width "
                f"({self.config.max_span_width})."
            )
        if relevance_score.dim() != 2 or relevance_score.size(0) != batch_size or relevance_score.size(1) < beam:
            raise ValueError(
                f"RealmReader: `relevance_score` must have shape ([batch_size={batch_size},] k) with k >= {beam}, got "
                f"{tuple(relevance_score.shape)}."
            )
        if block_mask.shape[:2] != (batch_size, num_rows) or block_mask.size(-1) != seq_len:
            raise ValueError(
                f"RealmReader: `block_mask` has shape {tuple(block_mask.shape)}, expected the shape of `input_ids` "
                f"{tuple(rows_ids.shape)}."
            )
        _reject_head_mask(head_mask)

        def rows(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[:, :beam].reshape(batch_size * beam, *t.shape[2:])

        trunk_inputs = {
            "input_ids": rows(input_ids),
            "attention_mask": rows(attention_mask),
            "token_type_ids": rows(token_type_ids),
            "inputs_embeds": rows(inputs_embeds),
        }
        if _can_trim_by_length(trunk_inputs, position_ids, output_attentions, output_hidden_states):
            outputs = BaseModelOutput(last_hidden_state=self._trunk_by_length(**trunk_inputs))
        else:
            outputs = self.realm(
                **trunk_inputs,
                position_ids=position_ids,
                **self._trunk_kwargs(
                    {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
                ),
            )
        logits, starts, ends = self.qa_outputs(outputs.last_hidden_state, rows(block_mask))
        logits = logits.view(batch_size, beam, -1) + relevance_score[:, :beam].unsqueeze(-1)

        block_idx = logits.max(dim=2).values.argmax(dim=1)
        candidate = logits.max(dim=1).values.argmax(dim=1)
        start_pos, end_pos = starts[candidate], ends[candidate]

        loss = retriever_loss = reader_loss = retriever_correct = reader_correct = None
        if start_positions is not None and end_positions is not None and has_answers is not None:
            start_positions = start_positions[:, :beam].clamp(-1, seq_len)
            end_positions = end_positions[:, :beam].clamp(-1, seq_len)
            # [batch, beam, max_answers, num_spans] -> [batch, beam, num_spans]
            reader_correct = (
                (starts.view(1, 1, 1, -1) == start_positions.unsqueeze(-1))
                & (ends.view(1, 1, 1, -1) == end_positions.unsqueeze(-1))
            ).any(dim=2)
            retriever_correct = has_answers.bool()
            retriever_loss = _marginal_log_loss(relevance_score, retriever_correct)
            retriever_loss = retriever_loss * retriever_correct.any(dim=-1).to(retriever_loss.dtype)
            reader_loss = _marginal_log_loss(logits.view(batch_size, -1), reader_correct.view(batch_size, -1))
            reader_loss = reader_loss * reader_correct.view(batch_size, -1).any(dim=-1).to(reader_loss.dtype)
            loss = (retriever_loss + reader_loss).mean()
            if single:
                retriever_loss, reader_loss = retriever_loss[0], reader_loss[0]
                retriever_correct, reader_correct = retriever_correct[0], reader_correct[0]

        if single:
            block_idx, candidate, logits = block_idx[0], candidate[0], logits[0]
            start_pos, end_pos = start_pos[:1], end_pos[:1]
        output = RealmReaderOutput(
            loss=loss,
            retriever_loss=retriever_loss,
            reader_loss=reader_loss,
            retriever_correct=retriever_correct,
            reader_correct=reader_correct,
            block_idx=block_idx,
            candidate=candidate,
            start_pos=start_pos,
            end_pos=end_pos,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            logits=logits,
        )
        return output if _use_return_dict(return_dict, self.config) else output.to_tuple()

    def _trunk_by_length(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None, **kwargs
    ) -> torch.Tensor:
        """Last hidden states of right-padded rows, computed in groups of `_TRIM_GROUP_ROWS` rows of similar length,
        each cut to its longest row (positions past a row's length are zeros). Rows of many questions are padded to
        the longest row of the whole batch; this spares the trunk that padding."""
        num_rows, seq_len = input_ids.shape
        lengths = attention_mask.sum(-1)
        order = torch.argsort(lengths, descending=True)
        last_hidden_state = None
        for group in order.split(_TRIM_GROUP_ROWS):
            length = int(lengths[group].max())
            hidden = self.realm(
                input_ids=input_ids[group, :length],
                attention_mask=attention_mask[group, :length],
                token_type_ids=None if token_type_ids is None else token_type_ids[group, :length],
            ).last_hidden_state
            if last_hidden_state is None:
                last_hidden_state = hidden.new_zeros(num_rows, seq_len, hidden.size(-1))
            last_hidden_state[group, :length] = hidden
        return last_hidden_state


_TRIM_GROUP_ROWS = 16


def _can_trim_by_length(
    inputs: dict, position_ids: torch.Tensor | None, output_attentions: bool | None, output_hidden_states: bool | None
) -> bool:
    """Whether the reader rows can go through the trunk in length groups: ids with a right-padding attention mask,
    default positions, and only the last hidden states wanted."""
    mask = inputs["attention_mask"]
    if inputs["input_ids"] is None or inputs["inputs_embeds"] is not None or mask is None or position_ids is not None:
        return False
    if output_attentions or output_hidden_states or mask.size(0) <= 1:
        return False
    lengths = mask.sum(-1, keepdim=True)
    positions = torch.arange(mask.size(-1), device=mask.device)
    return bool(torch.equal(mask.bool(), positions < lengths)) and int(lengths.min()) > 0


class RealmForOpenQA(RealmPreTrainedModel):
    r"""
    End-to-end open-domain question answering: embed the questions, retrieve blocks from the knowledge index, read
    the top `config.reader_beam_size` blocks and extract an answer span.

    The corpus and its embeddings are data, not weights: they live in the retriever ([`RealmRetriever`] over a
    [`RealmIndex`]), which is passed at construction or set later with [`~RealmForOpenQA.set_retriever`]. As in the
    paper, the block embeddings stay fixed; gradients reach the query embedder through the retrieval logits, which
    are recomputed from the retrieved block embeddings. Checkpoints of the original implementation, whose state dict
    holds the corpus embeddings as `block_emb`, load without that tensor; read it with
    [`~realm_hf.load_legacy_block_emb`].

    Args:
        config ([`RealmConfig`]): Model configuration.
        retriever ([`~realm_hf.retrieval.protocols.Retriever`], *optional*): Retriever used by `forward` (a
            [`RealmRetriever`], or anything implementing the protocol).
    """

    _keys_to_ignore_on_load_unexpected = [*_LEGACY_BUFFER_KEYS, r"^block_emb$"]

    def __init__(self, config: RealmConfig, retriever: Retriever | None = None):
        super().__init__(config)
        self.embedder = RealmEmbedder(config)
        self.reader = RealmReader(config)
        self.retriever = _checked_retriever(retriever, type(self).__name__)
        self.post_init()

    def set_retriever(self, retriever: Retriever | None) -> None:
        """Sets the [`RealmRetriever`] used by `forward`."""
        self.retriever = _checked_retriever(retriever, type(self).__name__)

    @classmethod
    def from_pretraining(
        cls,
        pretrained: "RealmForPreTraining | str",
        retriever: Retriever | None = None,
        allow_stale_index: bool = False,
        **kwargs,
    ) -> "RealmForOpenQA":
        r"""
        The open-QA model the paper fine-tunes, initialised from REALM pre-training: the query embedder from the
        pre-trained query tower, the reader's BERT and MLM head from the knowledge-augmented encoder, and the block
        embeddings of the pre-training index (the retriever is reused as it is, nothing is re-embedded). The span
        scorer (`reader.qa_outputs`) is new; its weights are listed in a warning.

        Args:
            pretrained ([`RealmForPreTraining`] or `str`):
                A pre-trained model, or a local directory / Hub id that `RealmForPreTraining.from_pretrained` loads.
            retriever ([`~realm_hf.retrieval.protocols.Retriever`], *optional*):
                The retriever of the open-QA model; defaults to the pre-trained model's, whose index must be the one
                the pre-trained document tower builds (its embeddings become the open-QA model's block embeddings).
            allow_stale_index (`bool`, *optional*, defaults to `False`):
                Reuse the pre-trained model's index even if another document tower embedded it (with a warning).
            kwargs:
                Passed to `RealmForPreTraining.from_pretrained` when `pretrained` is a path.

        Returns:
            [`RealmForOpenQA`] with the configuration of the pre-trained model.
        """
        if not isinstance(pretrained, RealmForPreTraining):
            pretrained = RealmForPreTraining.from_pretrained(pretrained, **kwargs)
        if retriever is None and pretrained.retriever is not None:
            require = getattr(pretrained.retriever.index, "require_embedder", None)
            if require is not None:
                require(pretrained.embedder, "The pre-trained model's index", allow_stale_index)
        config = RealmConfig.from_dict(pretrained.config.to_dict())
        config.architectures = [cls.__name__]
        model = cls(config, retriever=retriever if retriever is not None else pretrained.retriever)
        model.embedder.load_state_dict(pretrained.query_embedder.state_dict())
        result = model.reader.load_state_dict(pretrained.encoder.state_dict(), strict=False)
        if result.unexpected_keys:
            raise ValueError(
                f"Unexpected knowledge-augmented encoder weights for the reader: {result.unexpected_keys}"
            )
        logger.warning(
            f"RealmForOpenQA from REALM pre-training: the query embedder and the reader's encoder are the pre-trained "
            f"ones; newly initialised (train them by fine-tuning): {sorted(result.missing_keys)}."
        )
        return model.to(pretrained.device)

    @property
    def searcher_beam_size(self) -> int:
        """Retrieval depth: `config.searcher_beam_size` in training, `config.reader_beam_size` in evaluation."""
        return self.config.searcher_beam_size if self.training else self.config.reader_beam_size

    def forward(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        answer_ids: list | None = None,
        return_dict: bool | None = None,
        gold_doc_ids: list | None = None,
    ) -> RealmForOpenQAOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, question_len)`):
                Tokenized questions `[CLS] question [SEP]` (padded).
            attention_mask, token_type_ids:
                As for [`RealmEmbedder`].
            answer_ids (`list`, *optional*):
                Gold answers as token ids without special tokens: for each question, a list of answers, each a list
                of ids. For a single question, the original flat form (a list of answers) is accepted too.
            gold_doc_ids (`list[list[int]]`, *optional*):
                For each question, the `doc_id`s of its gold documents (the corpus' `doc_id` column, or rows). With
                `answer_ids`, the retriever's loss is then the marginal log-likelihood of the retrieved blocks of those
                documents instead of the blocks containing an answer (supervised retrieval, as with gold passages);
                the reader's loss is unchanged. The paper's fine-tuning uses the answers alone.

        Returns:
            [`RealmForOpenQAOutput`], or with `return_dict=False` the original implementation's tuple
            `(reader_output, predicted_answer_ids)`.
        """
        if self.retriever is None:
            raise ValueError(
                "RealmForOpenQA needs a retriever: pass `retriever=RealmRetriever(index, tokenizer)` to "
                "`from_pretrained`/`__init__` or call `model.set_retriever(...)`."
            )
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError("RealmForOpenQA: `input_ids` must have shape (batch_size, question_len).")
        batch_size = input_ids.size(0)
        answer_ids = _normalise_answer_ids(answer_ids, batch_size)
        if gold_doc_ids is not None:
            if answer_ids is None:
                raise ValueError("RealmForOpenQA: `gold_doc_ids` supervises training, which needs `answer_ids` too.")
            if len(gold_doc_ids) != batch_size:
                raise ValueError(
                    f"RealmForOpenQA: `gold_doc_ids` has {len(gold_doc_ids)} entries but the batch has {batch_size}."
                )

        query = self.embedder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
        ).projected_score
        retrieval = self.retriever(
            query,
            question_input_ids=input_ids,
            question_attention_mask=attention_mask,
            answer_ids=answer_ids,
            num_retrieved=self.searcher_beam_size,
            num_read=self.config.reader_beam_size,
            max_length=self.config.reader_seq_len,
            # Only when given, so that retrievers written before `gold_doc_ids` keep working.
            **({"gold_doc_ids": gold_doc_ids} if gold_doc_ids is not None else {}),
        )
        device = query.device
        retrieved_emb = retrieval["retrieved_embeddings"].to(device=device, dtype=query.dtype)
        # Recomputed with torch so that the gradient reaches the query embedder; block embeddings stay fixed.
        retrieved_logits = torch.einsum("bd,bkd->bk", query, retrieved_emb)
        labels = {}
        if answer_ids is not None:
            labels = {
                "has_answers": retrieval["is_gold" if gold_doc_ids is not None else "has_answers"].to(device),
                "start_positions": retrieval["start_positions"].to(device),
                "end_positions": retrieval["end_positions"].to(device),
            }
        reader_output = self.reader(
            input_ids=retrieval["input_ids"].to(device),
            attention_mask=retrieval["attention_mask"].to(device),
            token_type_ids=retrieval["token_type_ids"].to(device),
            relevance_score=retrieved_logits,
            block_mask=retrieval["block_mask"].to(device),
            return_dict=True,
            **labels,
        )
        reader_input_ids = retrieval["input_ids"]
        predicted = [
            reader_input_ids[b, reader_output.block_idx[b], reader_output.start_pos[b] : reader_output.end_pos[b] + 1]
            for b in range(batch_size)
        ]
        if batch_size == 1:
            reader_output = _squeeze_reader_output(reader_output)
            predicted = predicted[0]
        output = RealmForOpenQAOutput(
            reader_output=reader_output,
            predicted_answer_ids=predicted,
            retrieved_block_ids=retrieval["retrieved_block_ids"],
            retrieved_logits=retrieved_logits,
        )
        if _use_return_dict(return_dict, self.config):
            return output
        # The original's tuple: `reader_output, predicted_answer_ids = model(..., return_dict=False)`.
        return output.reader_output, output.predicted_answer_ids


def _squeeze_reader_output(output: RealmReaderOutput) -> RealmReaderOutput:
    """Drops the batch dimension of a one-question batched reader output (shapes of the original implementation)."""
    squeezed = RealmReaderOutput(**{k: v for k, v in output.items()})
    for name in ("retriever_loss", "reader_loss", "retriever_correct", "reader_correct", "block_idx", "candidate"):
        value = getattr(output, name)
        if value is not None:
            squeezed[name] = value[0]
    squeezed["logits"] = output.logits[0]
    return squeezed


def _normalise_answer_ids(answer_ids: list | None, batch_size: int) -> list[list[list[int]]] | None:
    """Returns answers as `[question][answer][token]`, accepting the original flat form for one question."""
    if answer_ids is None:
        return None
    if isinstance(answer_ids, torch.Tensor):
        answer_ids = answer_ids.tolist()
    if len(answer_ids) > 0 and all(len(a) > 0 and isinstance(a[0], int) for a in answer_ids):
        if batch_size != 1:
            raise ValueError(
                "RealmForOpenQA: `answer_ids` is a flat list of answers, which is only allowed for one question; "
                f"for a batch of {batch_size} questions give one list of answers per question."
            )
        return [answer_ids]
    if len(answer_ids) != batch_size:
        raise ValueError(
            f"RealmForOpenQA: `answer_ids` has answers for {len(answer_ids)} questions but the batch has {batch_size}."
        )
    return [[list(a) for a in answers] for answers in answer_ids]


def _use_return_dict(return_dict: bool | None, config: RealmConfig) -> bool:
    return return_dict if return_dict is not None else config.return_dict


def _reject_head_mask(head_mask: torch.Tensor | None) -> None:
    if head_mask is not None:
        raise ValueError(
            "`head_mask` is not supported: the transformers 5 BERT trunk removed head masking. Prune heads instead."
        )
