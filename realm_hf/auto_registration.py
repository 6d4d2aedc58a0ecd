"""Registration of the REALM classes with the transformers Auto classes (idempotent)."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration_realm import RealmConfig
from .modeling_realm import RealmEmbedder, RealmForPreTraining, RealmKnowledgeAugEncoder
from .pipeline_realm import register_realm_pipeline
from .tokenization_realm import RealmTokenizer, RealmTokenizerFast


def register_auto_classes() -> None:
    """Registers `RealmConfig` (`model_type="realm"`), the models and the tokenizers with the Auto classes.

    - `AutoConfig`: `"realm"` -> [`RealmConfig`].
    - `AutoModel`: [`RealmEmbedder`] (the retrieval tower, REALM's base encoder).
    - `AutoModelForMaskedLM`: [`RealmKnowledgeAugEncoder`].
    - `AutoModelForPreTraining`: [`RealmForPreTraining`].
    - `AutoTokenizer`: [`RealmTokenizer`] / [`RealmTokenizerFast`], so a `tokenizer_config.json` naming
      `RealmTokenizer` resolves.

    Calling it again does nothing.
    """
    if CONFIG_MAPPING.get("realm", None) is not RealmConfig:
        AutoConfig.register("realm", RealmConfig, exist_ok=True)
    AutoModel.register(RealmConfig, RealmEmbedder, exist_ok=True)
    AutoModelForMaskedLM.register(RealmConfig, RealmKnowledgeAugEncoder, exist_ok=True)
    AutoModelForPreTraining.register(RealmConfig, RealmForPreTraining, exist_ok=True)
    AutoTokenizer.register(
        RealmConfig, slow_tokenizer_class=RealmTokenizer, fast_tokenizer_class=RealmTokenizerFast, exist_ok=True
    )


def register_realm() -> None:
    """What importing `realm_hf` registers: the Auto classes (`register_auto_classes`) and the `"realm-open-qa"`
    pipeline task (`register_realm_pipeline`). Idempotent."""
    register_auto_classes()
    register_realm_pipeline()
