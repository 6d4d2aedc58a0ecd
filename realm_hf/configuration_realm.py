"""REALM model configuration."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


#: Values of `RealmConfig.embedder_pooling`.
EMBEDDER_POOLING_MODES = ("cls", "mean")


@strict
class RealmConfig(PreTrainedConfig):
    r"""
    Configuration of every REALM model: [`RealmEmbedder`], [`RealmScorer`], [`RealmKnowledgeAugEncoder`],
    [`RealmReader`], [`RealmForPreTraining`] and [`RealmForOpenQA`].

    The fields and defaults are those of the original transformers REALM (the `google/realm-cc-news-pretrained-*`
    architecture: BERT-base uncased, a 128-dimensional retrieval projection), so every published `config.json`
    loads unchanged. Keys the published files carry that this class does not declare (for example
    `searcher_seq_len`) are kept as attributes and written back on save.

    Args:
        vocab_size (`int`, *optional*, defaults to 30522):
            Size of the WordPiece vocabulary.
        hidden_size (`int`, *optional*, defaults to 768):
            Width of the BERT encoder layers and the pooler.
        retriever_proj_size (`int`, *optional*, defaults to 128):
            Dimension of the retrieval embeddings produced by [`RealmEmbedder`].
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of transformer layers.
        num_attention_heads (`int`, *optional*, defaults to 12):
            Number of attention heads per layer.
        num_candidates (`int`, *optional*, defaults to 8):
            Number of retrieved documents per query seen by [`RealmScorer`] and [`RealmKnowledgeAugEncoder`].
        intermediate_size (`int`, *optional*, defaults to 3072):
            Width of the feed-forward layers.
        hidden_act (`str`, *optional*, defaults to `"gelu_new"`):
            Activation of the feed-forward layers and of the MLM head transform.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on embeddings and sublayer outputs.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on attention probabilities.
        max_position_embeddings (`int`, *optional*, defaults to 512):
            Largest sequence length the position embeddings cover.
        type_vocab_size (`int`, *optional*, defaults to 2):
            Number of token types (segments).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of every weight matrix.
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            Epsilon of the BERT, MLM-head and retrieval-projection layer norms.
        span_hidden_size (`int`, *optional*, defaults to 256):
            Width of the reader's span representation.
        max_span_width (`int`, *optional*, defaults to 10):
            Longest answer span (in wordpieces) the reader scores.
        reader_layer_norm_eps (`float`, *optional*, defaults to 1e-3):
            Epsilon of the reader's span layer norm.
        reader_beam_size (`int`, *optional*, defaults to 5):
            Number of retrieved blocks the reader reads; also the retrieval depth at evaluation time.
        reader_seq_len (`int`, *optional*, defaults to 320):
            Maximum length of a `[CLS] question [SEP] block [SEP]` reader input (288 block + 32 question).
        num_block_records (`int`, *optional*, defaults to 13353718):
            Number of evidence blocks of the knowledge corpus the checkpoint was trained with.
        searcher_beam_size (`int`, *optional*, defaults to 5000):
            Retrieval depth at training time (the retriever loss marginalises over this many blocks).
        share_query_embedder (`bool`, *optional*, defaults to `True`):
            Whether queries and documents are embedded by one shared [`RealmEmbedder`] (as in the original code) or
            by two separate towers (saved under `embedder.` and `query_embedder.`).
        block_seq_len (`int`, *optional*, defaults to 288):
            Maximum length of a document-tower input `[CLS] title [SEP] block [SEP]` (pre-training and indexing).
        embedder_pooling (`str`, *optional*, defaults to `"cls"`):
            How [`RealmEmbedder`] summarises a sequence before the retrieval projection: `"cls"` (the original REALM:
            the BERT pooler, dense + tanh over `[CLS]`) or `"mean"` (the average of the last hidden states over the
            attention mask, as sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained to be used).
        embedder_single_segment (`bool`, *optional*, defaults to `False`):
            Whether [`RealmEmbedder`] reads every input as one segment (all token type ids 0, whatever it is given).
            The original REALM puts a block's title in segment 0 and its body in segment 1; sentence-transformers
            checkpoints were trained on single segments, and embed `[CLS] title [SEP] body [SEP]` blocks better
            that way. The reader and the knowledge-augmented encoder are not affected.
        use_null_document (`bool`, *optional*, defaults to `True`):
            Whether pre-training puts the null (empty) document first among the retrieved candidates, "a consistent
            sink when no retrieval is necessary" (paper, section 3.4).
        pad_token_id (`int`, *optional*, defaults to 1):
            Kept at 1 for compatibility with the published checkpoints; it is only used as the `padding_idx` of
            the word embeddings (the uncased vocabulary pads with id 0).

    Example:

    ```python
    >>> from realm_hf import RealmConfig, RealmEmbedder

    >>> config = RealmConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    >>> model = RealmEmbedder(config)
    ```
    """

    model_type = "realm"

    vocab_size: int = 30522
    hidden_size: int = 768
    retriever_proj_size: int = 128
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_candidates: int = 8
    intermediate_size: int = 3072
    hidden_act: str = "gelu_new"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    span_hidden_size: int = 256
    max_span_width: int = 10
    reader_layer_norm_eps: float = 1e-3
    reader_beam_size: int = 5
    reader_seq_len: int = 320
    num_block_records: int = 13353718
    searcher_beam_size: int = 5000
    share_query_embedder: bool = True
    block_seq_len: int = 288
    embedder_pooling: str = "cls"
    embedder_single_segment: bool = False
    use_null_document: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    use_cache: bool = True
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"RealmConfig: hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})."
            )
        for name in ("num_candidates", "reader_beam_size", "searcher_beam_size", "max_span_width", "reader_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"RealmConfig: {name} must be >= 1, got {getattr(self, name)}.")
        position_embedding_type = getattr(self, "position_embedding_type", "absolute")
        if position_embedding_type != "absolute":
            raise ValueError(
                f"RealmConfig: position_embedding_type={position_embedding_type!r} is not supported: realm_hf builds "
                "absolute position embeddings only (those of every published REALM checkpoint); the original port's "
                "'relative_key' / 'relative_key_query' distance embeddings are not implemented."
            )
        if self.embedder_pooling not in EMBEDDER_POOLING_MODES:
            raise ValueError(
                f"RealmConfig: embedder_pooling must be one of {EMBEDDER_POOLING_MODES}, got {self.embedder_pooling!r}."
            )

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        """Reads a configuration file, refusing one written for another model type (instead of warning)."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"The configuration at {pretrained_model_name_or_path!r} is for model_type={model_type!r}, not "
                f"{cls.model_type!r}: it is not a REALM checkpoint. To start REALM from a BERT checkpoint use "
                "`realm_hf.init_from_bert` instead."
            )
        return config_dict, kwargs
