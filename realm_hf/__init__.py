"""realm_hf: REALM (Retrieval-Augmented Language Model Pre-Training) for transformers 5.

Importing the package registers the REALM configuration, models and tokenizers with the transformers Auto classes,
so `AutoConfig`, `AutoModel` and `AutoTokenizer` load REALM checkpoints without `trust_remote_code`, and the
`"realm-open-qa"` task with `transformers.pipeline` (the only effects of the import).
"""

from . import logging
from .auto_registration import register_auto_classes
from .bert_init import init_from_bert, realm_config_from_bert
from .configuration_realm import RealmConfig
from .evaluation.open_qa import evaluate_open_qa, gold_passage_recall, zero_shot_recall
from .evaluation.reading import make_reading_evaluator, masked_lm_reading
from .hub.model_card import RealmModelCardCallback, RealmModelCardData, generate_model_card, update_card_from_metrics
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
from .training.collators import DataCollatorForInverseClozeTask, DataCollatorForRealmPreTraining, prepare_ict_examples
from .training.corpus_pretraining import CorpusArguments, CorpusModelArguments, pretrain_on_corpus
from .training.ict import InverseClozeTaskArguments, train_inverse_cloze_task
from .training.masking import tag_salient_spans
from .training.mlm_head import MaskedLMHeadFitting, fit_masked_lm_head
from .training.openqa import DataCollatorForRealmOpenQA, RealmTrainer
from .training.optimization import make_accelerator
from .training.pretraining import RealmPreTrainingArguments, train_realm
from .training.taggers import RuleBasedTagger, SpacyTagger, TransformersNERTagger, make_tagger
from .version import __version__


register_auto_classes()
register_realm_pipeline()

__all__ = [
    "AsyncIndexRefresher",
    "BlockRecordsRetriever",
    "CorpusArguments",
    "CorpusModelArguments",
    "DataCollatorForInverseClozeTask",
    "DataCollatorForRealmOpenQA",
    "DataCollatorForRealmPreTraining",
    "IndexRefreshCallback",
    "IndexRefreshSchedule",
    "IndexRefresher",
    "InverseClozeTaskArguments",
    "MaskedLMHeadFitting",
    "RealmAnswer",
    "RealmConfig",
    "RealmEmbedder",
    "RealmEmbedderOutput",
    "RealmForOpenQA",
    "RealmForOpenQAOutput",
    "RealmForPreTraining",
    "RealmForPreTrainingOutput",
    "RealmIndex",
    "RealmIndexConfig",
    "RealmKnowledgeAugEncoder",
    "RealmModelCardCallback",
    "RealmModelCardData",
    "RealmOpenQAPipeline",
    "RealmPreTrainedModel",
    "RealmPreTrainingArguments",
    "RealmReader",
    "RealmReaderOutput",
    "RealmRetriever",
    "RealmScorer",
    "RealmScorerOutput",
    "RealmTokenizer",
    "RealmTokenizerFast",
    "RealmTrainer",
    "RuleBasedTagger",
    "ShardedRealmIndex",
    "SpacyTagger",
    "TransformersNERTagger",
    "__version__",
    "answer_questions",
    "build_index",
    "compute_embedder_fingerprint",
    "embed_corpus",
    "evaluate_open_qa",
    "fit_masked_lm_head",
    "generate_model_card",
    "gold_passage_recall",
    "init_from_bert",
    "load_legacy_block_emb",
    "load_realm",
    "logging",
    "make_accelerator",
    "make_reading_evaluator",
    "make_tagger",
    "masked_lm_reading",
    "prepare_ict_examples",
    "pretrain_on_corpus",
    "publish_realm",
    "push_index_to_hub",
    "realm_config_from_bert",
    "refresh_index",
    "register_auto_classes",
    "register_realm_pipeline",
    "save_final_model",
    "save_realm",
    "split_sentences",
    "tag_salient_spans",
    "train_inverse_cloze_task",
    "train_realm",
    "update_card_from_metrics",
    "zero_shot_recall",
]
