"""realm_hf: REALM (Retrieval-Augmented Language Model Pre-Training) for transformers 5.

Importing the package registers the REALM configuration, models and tokenizers with the transformers Auto classes
(the only effect of the import), so `AutoConfig`, `AutoModel` and `AutoTokenizer` load REALM checkpoints without
`trust_remote_code`.
"""

__version__ = "0.1.0.dev0"

from .auto_registration import register_auto_classes
from .configuration_realm import RealmConfig
from .modeling_realm import (
    RealmEmbedder,
    RealmEmbedderOutput,
    RealmForOpenQA,
    RealmForOpenQAOutput,
    RealmKnowledgeAugEncoder,
    RealmPreTrainedModel,
    RealmReader,
    RealmReaderOutput,
    RealmScorer,
    RealmScorerOutput,
)
from .tokenization_realm import RealmTokenizer, RealmTokenizerFast


register_auto_classes()

__all__ = [
    "RealmConfig",
    "RealmEmbedder",
    "RealmEmbedderOutput",
    "RealmForOpenQA",
    "RealmForOpenQAOutput",
    "RealmKnowledgeAugEncoder",
    "RealmPreTrainedModel",
    "RealmReader",
    "RealmReaderOutput",
    "RealmScorer",
    "RealmScorerOutput",
    "RealmTokenizer",
    "RealmTokenizerFast",
    "__version__",
    "register_auto_classes",
]
