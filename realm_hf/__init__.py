"""realm_hf: REALM (Retrieval-Augmented Language Model Pre-Training) for transformers 5.

Importing the package registers the REALM configuration, models and tokenizers with the transformers Auto classes,
so `AutoConfig`, `AutoModel` and `AutoTokenizer` load REALM checkpoints without `trust_remote_code`, and the
`"realm-open-qa"` task with `transformers.pipeline` (the only effects of the import). The public names are loaded on
first use (as transformers and huggingface_hub load theirs). The `realm-hf` command registers when it runs a command,
so that `realm-hf --help` does not load torch.
"""

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from .version import __version__


# Each public name and the module that defines it; `__getattr__` imports the module on first use.
_LAZY_IMPORTS: dict[str, tuple[str, ...]] = {
    "auto_registration": ("register_auto_classes", "register_realm"),
    "bert_init": (
        "init_from_bert",
        "realm_config_from_bert",
    ),
    "configuration_realm": ("RealmConfig",),
    "evaluation.open_qa": (
        "evaluate_open_qa",
        "gold_passage_recall",
        "zero_shot_recall",
    ),
    "evaluation.reading": (
        "make_reading_evaluator",
        "masked_lm_reading",
    ),
    "hub.model_card": (
        "RealmModelCardCallback",
        "RealmModelCardData",
        "generate_model_card",
        "update_card_from_metrics",
    ),
    "hub.publish": (
        "load_realm",
        "publish_realm",
        "push_index_to_hub",
        "save_final_model",
        "save_realm",
    ),
    "inference": (
        "RealmAnswer",
        "answer_questions",
    ),
    "modeling_realm": (
        "RealmEmbedder",
        "RealmEmbedderOutput",
        "RealmForOpenQA",
        "RealmForOpenQAOutput",
        "RealmForPreTraining",
        "RealmForPreTrainingOutput",
        "RealmKnowledgeAugEncoder",
        "RealmPreTrainedModel",
        "RealmReader",
        "RealmReaderOutput",
        "RealmScorer",
        "RealmScorerOutput",
    ),
    "pipeline_realm": (
        "RealmOpenQAPipeline",
        "register_realm_pipeline",
    ),
    "retrieval.corpus": ("split_sentences",),
    "retrieval.embedding": ("embed_corpus",),
    "retrieval.fingerprint": ("compute_embedder_fingerprint",),
    "retrieval.index": (
        "RealmIndex",
        "RealmIndexConfig",
        "build_index",
    ),
    "retrieval.legacy": ("load_legacy_block_emb",),
    "retrieval.refresh": (
        "AsyncIndexRefresher",
        "IndexRefresher",
        "IndexRefreshSchedule",
        "refresh_index",
    ),
    "retrieval.retriever": (
        "BlockRecordsRetriever",
        "RealmRetriever",
    ),
    "retrieval.sharded": ("ShardedRealmIndex",),
    "tokenization_realm": (
        "RealmTokenizer",
        "RealmTokenizerFast",
    ),
    "training.callbacks": ("IndexRefreshCallback",),
    "training.collators": (
        "DataCollatorForInverseClozeTask",
        "DataCollatorForRealmPreTraining",
        "prepare_ict_examples",
    ),
    "training.corpus_pretraining": (
        "CorpusArguments",
        "CorpusModelArguments",
        "pretrain_on_corpus",
    ),
    "training.ict": (
        "InverseClozeTaskArguments",
        "train_inverse_cloze_task",
    ),
    "training.masking": ("tag_salient_spans",),
    "training.mlm_head": (
        "MaskedLMHeadFitting",
        "fit_masked_lm_head",
    ),
    "training.openqa": (
        "DataCollatorForRealmOpenQA",
        "RealmTrainer",
    ),
    "training.optimization": ("make_accelerator",),
    "training.pretraining": (
        "RealmPreTrainingArguments",
        "train_realm",
    ),
    "training.taggers": (
        "RuleBasedTagger",
        "SpacyTagger",
        "TransformersNERTagger",
        "make_tagger",
    ),
}
_SUBMODULES = ("logging",)
_MODULE_OF = {name: module for module, names in _LAZY_IMPORTS.items() for name in names}

__all__ = sorted([*_MODULE_OF, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the same names, for type checkers and IDEs (a test keeps the two lists equal)
    from . import logging
    from .auto_registration import register_auto_classes, register_realm
    from .bert_init import init_from_bert, realm_config_from_bert
    from .configuration_realm import RealmConfig
    from .evaluation.open_qa import evaluate_open_qa, gold_passage_recall, zero_shot_recall
    from .evaluation.reading import make_reading_evaluator, masked_lm_reading
    from .hub.model_card import (
        RealmModelCardCallback,
        RealmModelCardData,
        generate_model_card,
        update_card_from_metrics,
    )
    from .hub.publish import load_realm, publish_realm, push_index_to_hub, save_final_model, save_realm
    from .inference import RealmAnswer, answer_questions
    from .modeling_realm import (
        RealmEmbedder,
        RealmEmbedderOutput,
        RealmForOpenQA,
        RealmForOpenQAOutput,
        RealmForPreTraining,
        RealmForPreTrainingOutput,
        RealmKnowledgeAugEncoder,
        RealmPreTrainedModel,
        RealmReader,
        RealmReaderOutput,
        RealmScorer,
        RealmScorerOutput,
    )
    from .pipeline_realm import RealmOpenQAPipeline, register_realm_pipeline
    from .retrieval.corpus import split_sentences
    from .retrieval.embedding import embed_corpus
    from .retrieval.fingerprint import compute_embedder_fingerprint
    from .retrieval.index import RealmIndex, RealmIndexConfig, build_index
    from .retrieval.legacy import load_legacy_block_emb
    from .retrieval.refresh import AsyncIndexRefresher, IndexRefresher, IndexRefreshSchedule, refresh_index
    from .retrieval.retriever import BlockRecordsRetriever, RealmRetriever
    from .retrieval.sharded import ShardedRealmIndex
    from .tokenization_realm import RealmTokenizer, RealmTokenizerFast
    from .training.callbacks import IndexRefreshCallback
    from .training.collators import (
        DataCollatorForInverseClozeTask,
        DataCollatorForRealmPreTraining,
        prepare_ict_examples,
    )
    from .training.corpus_pretraining import CorpusArguments, CorpusModelArguments, pretrain_on_corpus
    from .training.ict import InverseClozeTaskArguments, train_inverse_cloze_task
    from .training.masking import tag_salient_spans
    from .training.mlm_head import MaskedLMHeadFitting, fit_masked_lm_head
    from .training.openqa import DataCollatorForRealmOpenQA, RealmTrainer
    from .training.optimization import make_accelerator
    from .training.pretraining import RealmPreTrainingArguments, train_realm
    from .training.taggers import RuleBasedTagger, SpacyTagger, TransformersNERTagger, make_tagger


def _run_by_the_realm_hf_command() -> bool:
    """Whether this process is the `realm-hf` console script, whose `main` registers before it runs a command."""
    argv = getattr(sys, "argv", None) or [""]
    return os.path.basename(argv[0]) in ("realm-hf", "realm-hf.exe")


if not _run_by_the_realm_hf_command():
    from .auto_registration import register_realm

    register_realm()
