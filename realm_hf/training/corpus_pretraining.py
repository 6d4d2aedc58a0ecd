"""REALM pre-training on your own documents: the pipeline behind `realm-hf pretrain --corpus` and
`examples/pretrain_realm.py`.

Documents (a JSON lines / JSON / CSV / Parquet file, a `datasets` directory or a Hub dataset id, with a text column
and optionally a title column) serve twice, as in the paper: split into evidence blocks they are the knowledge corpus
Z, and split into sentences with their salient spans tagged they are the masked-LM examples X (a sentence's own
document is never retrieved for it). The model starts from a REALM pre-training checkpoint, from a BERT checkpoint
(every trunk from BERT, REALM's heads new) or from random weights; an optional Inverse Cloze Task warm start trains
the retriever; then [`train_realm`] pre-trains with the marginal masked-LM loss through retrieval, refreshing the
index, and saves `output_dir/final` (model, tokenizer, index, card) and `output_dir/submodels`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelerate import Accelerator
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser, set_seed

from ..bert_init import init_from_bert
from ..configuration_realm import RealmConfig
from ..logging import get_logger
from ..modeling_realm import RealmForPreTraining
from ..retrieval.corpus import load_documents, split_documents_into_blocks
from ..retrieval.index import build_index
from ..retrieval.search import check_index_factory
from .collators import (
    MASKING_MODES,
    DataCollatorForInverseClozeTask,
    DataCollatorForRealmPreTraining,
    prepare_ict_examples,
)
from .ict import InverseClozeTaskArguments, train_inverse_cloze_task
from .masking import tag_salient_spans
from .pretraining import RealmPreTrainingArguments, make_accelerator, train_realm
from .taggers import TAGGERS, make_tagger


logger = get_logger(__name__)


@dataclass
class CorpusArguments:
    """Where the documents and the starting model come from (the options of `realm-hf pretrain --corpus` that the
    synthetic demo does not have)."""

    corpus: str | None = field(
        default=None,
        metadata={
            "help": "Pre-train on these documents instead of the synthetic world: a JSON lines, JSON, CSV or Parquet "
            "file, a datasets directory (save_to_disk) or a Hub dataset id, with a text column and optionally a "
            "title column."
        },
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "Start from this checkpoint (directory or Hub id): a REALM pre-training checkpoint (e.g. the "
            "final/ of an earlier run), or a BERT checkpoint (every trunk from BERT, REALM's heads new). Unset: "
            "random weights of --hidden_size / --num_hidden_layers (then --tokenizer_name is needed)."
        },
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer (directory or Hub id); defaults to --init_from's."}
    )
    split: str = field(default="train", metadata={"help": "Split of a Hub dataset or of a DatasetDict directory."})
    text_column: str = field(default="text", metadata={"help": "Column with the documents' text."})
    title_column: str = field(default="title", metadata={"help": "Column with their titles (empty when absent)."})
    max_block_length: int = field(
        default=288, metadata={"help": "Evidence block length in wordpieces, title included (paper: 288)."}
    )
    query_max_length: int = field(default=64, metadata={"help": "Masked sentence length in wordpieces (paper: 64)."})
    retriever_proj_size: int = field(
        default=128, metadata={"help": "Retrieval embedding size of a model not loaded from a REALM checkpoint."}
    )
    index_factory: str = field(
        default="Flat",
        metadata={
            "help": "FAISS index_factory string: 'Flat' (exact search) or e.g. 'IVF4096,SQ8' for large corpora."
        },
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes for splitting and tagging documents."})
    tagger: str = field(
        default="rule",
        metadata={
            "help": "Salient-span tagger: 'rule' (names, dates and numbers by rule; no model), 'spacy' (a spaCy "
            "entity recognizer, --tagger_model or en_core_web_sm) or 'ner' (a transformers token-classification "
            "model, --tagger_model, as REALM's CoNLL-2003 BERT tagger).",
            "choices": list(TAGGERS),
        },
    )
    tagger_model: str | None = field(
        default=None, metadata={"help": "The spaCy pipeline or token-classification model of --tagger."}
    )

    def __post_init__(self):
        if self.corpus is not None and self.init_from is None and self.tokenizer_name is None:
            raise ValueError(
                "--corpus needs a tokenizer: give --init_from (a REALM or BERT checkpoint, whose tokenizer is used) or "
                "--tokenizer_name."
            )


@dataclass
class CorpusModelArguments:
    """The model and warm-start settings of [`pretrain_on_corpus`] (in the CLI they are the demo's own options)."""

    hidden_size: int = field(default=128, metadata={"help": "Hidden size of a randomly initialised model."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Layers of a randomly initialised model."})
    num_candidates: int = field(default=8, metadata={"help": "Retrieved documents per sentence, null included."})
    use_null_document: bool = field(default=True, metadata={"help": "Put the null (empty) document first."})
    masking: str = field(default="salient_span", metadata={"help": "salient_span, random_token or random_span."})
    ict_steps: int = field(default=0, metadata={"help": "Inverse Cloze Task warm-start steps before REALM."})
    ict_learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the ICT warm start."})

    def __post_init__(self):
        if self.masking not in MASKING_MODES:
            raise ValueError(f"masking must be one of {MASKING_MODES}, got {self.masking!r}.")


def corpus_pretraining_parser(prog: str | None = None) -> HfArgumentParser:
    """The parser of `realm-hf pretrain --corpus` and `examples/pretrain_realm.py`: [`CorpusArguments`],
    [`CorpusModelArguments`] and [`RealmPreTrainingArguments`] (every `TrainingArguments` option)."""
    return HfArgumentParser(
        (CorpusArguments, CorpusModelArguments, RealmPreTrainingArguments),
        prog=prog,
        description="REALM pre-training on your documents: the corpus, the model and its warm start, and every "
        "TrainingArguments option (RealmPreTrainingArguments).",
    )


def load_corpus(args: CorpusArguments, tokenizer, max_block_length: int | None = None):
    r"""
    Loads `args.corpus` and splits it into evidence blocks.

    Args:
        args ([`CorpusArguments`]): The corpus and its columns.
        tokenizer: The tokenizer the blocks are measured with.
        max_block_length (`int`, *optional*): Overrides `args.max_block_length`.

    Returns:
        `tuple[datasets.Dataset, datasets.Dataset]`: the documents (with `args.title_column`, empty when the corpus has
        none) and their blocks.
    """
    documents = load_documents(
        args.corpus, split=args.split, text_column=args.text_column, title_column=args.title_column
    )
    if args.title_column not in documents.column_names:
        documents = documents.add_column(args.title_column, [""] * len(documents))
    blocks = split_documents_into_blocks(
        documents,
        tokenizer,
        max_block_length=max_block_length or args.max_block_length,
        num_proc=args.num_proc,
        title_column=args.title_column,
        text_column=args.text_column,
    )
    return documents, blocks


def _initial_model(args: CorpusArguments, model_args: CorpusModelArguments, tokenizer) -> RealmForPreTraining:
    overrides = {"num_candidates": model_args.num_candidates, "use_null_document": model_args.use_null_document}
    if args.init_from is None:
        hidden = model_args.hidden_size
        config = RealmConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=model_args.num_hidden_layers,
            num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
            retriever_proj_size=args.retriever_proj_size, block_seq_len=args.max_block_length, **overrides,
        )  # fmt: skip
        return RealmForPreTraining(config)
    if AutoConfig.from_pretrained(args.init_from).model_type == RealmConfig.model_type:
        return RealmForPreTraining.from_pretrained(args.init_from, **overrides)
    return init_from_bert(
        RealmForPreTraining, args.init_from, retriever_proj_size=args.retriever_proj_size,
        block_seq_len=args.max_block_length, **overrides,
    )  # fmt: skip


def pretrain_on_corpus(
    args: CorpusArguments,
    model_args: CorpusModelArguments,
    train_args: RealmPreTrainingArguments,
    accelerator: Accelerator | None = None,
) -> tuple[RealmForPreTraining, object, list[dict]]:
    r"""
    REALM pre-training on the documents of `args.corpus` (see the module docstring for the pipeline).

    Args:
        args ([`CorpusArguments`]): The documents, the starting checkpoint and the tokenizer.
        model_args ([`CorpusModelArguments`]): Model size (random initialisation), candidates, masking, ICT warm start.
        train_args ([`RealmPreTrainingArguments`]): REALM pre-training (steps, learning rates, index refresh,
            checkpoints, resume); the trained model is saved to `train_args.output_dir/final`.
        accelerator (`Accelerator`, *optional*): Defaults to [`make_accelerator`]`(train_args)`; several processes
            each train on their share of the sentences.

    Returns:
        `tuple`: the trained [`RealmForPreTraining`] (its retriever set to the last index), the tokenizer and the
        logged history.
    """
    if args.corpus is None:
        raise ValueError("pretrain_on_corpus needs CorpusArguments.corpus (the documents to pre-train on).")
    accelerator = accelerator or make_accelerator(train_args)
    set_seed(train_args.seed)  # the new weights (a random model, or the heads BERT lacks) follow --seed
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name or args.init_from)
    model = _initial_model(args, model_args, tokenizer)
    check_index_factory(args.index_factory, model.config.retriever_proj_size)
    tagger = make_tagger(args.tagger, args.tagger_model)  # a missing tagger model fails here, before any work
    with accelerator.main_process_first():
        documents, blocks = load_corpus(args, tokenizer, max_block_length=model.config.block_seq_len)
        sentences = tag_salient_spans(
            documents, tokenizer, tagger, text_column=args.text_column, num_proc=args.num_proc
        )
    check_index_factory(args.index_factory, model.config.retriever_proj_size, len(blocks))  # before any training
    if model_args.masking == "salient_span":
        sentences = sentences.filter(lambda row: len(row["salient_spans"]) > 0)
    if len(sentences) == 0:
        raise ValueError(
            f"{args.corpus}: no sentence to mask (with salient_span masking, no sentence has a named entity or a "
            "date); try --masking random_span."
        )
    logger.info(f"{len(documents)} documents: {len(blocks)} evidence blocks, {len(sentences)} masked-LM sentences.")

    if model_args.ict_steps:
        examples = prepare_ict_examples(
            documents, tokenizer, num_proc=args.num_proc, title_column=args.title_column, text_column=args.text_column
        )
        collator = DataCollatorForInverseClozeTask(
            tokenizer,
            query_max_length=args.query_max_length,
            block_max_length=model.config.block_seq_len,
            seed=train_args.seed,
        )
        ict_args = InverseClozeTaskArguments(
            max_steps=model_args.ict_steps, per_device_train_batch_size=train_args.per_device_train_batch_size,
            learning_rate=model_args.ict_learning_rate, seed=train_args.seed, use_cpu=train_args.use_cpu,
            disable_tqdm=train_args.disable_tqdm, output_dir=train_args.output_dir,
            accelerator_config={"use_configured_state": True},  # keep the run's Accelerator, do not reset it
        )  # fmt: skip
        train_inverse_cloze_task(model, examples, collator, ict_args, accelerator=accelerator)

    index = build_index(
        blocks,
        model.embedder.to(accelerator.device),
        tokenizer,
        args.index_factory,
        batch_size=train_args.embed_batch_size,
        accelerator=accelerator,
        show_progress=train_args.show_progress,
    )
    collator = DataCollatorForRealmPreTraining(
        tokenizer, masking=model_args.masking, max_length=args.query_max_length, seed=train_args.seed
    )
    history = train_realm(model, tokenizer, index, sentences, collator, train_args, accelerator=accelerator)
    return accelerator.unwrap_model(model), tokenizer, history
