"""realm_hf: REALM (Retrieval-Augmented Language Model Pre-Training) for transformers 5."""

__version__ = "0.1.0.dev0"

from .configuration_realm import RealmConfig


__all__ = ["RealmConfig", "__version__"]
