"""The version of realm_hf (a module of its own, so that other modules read it without importing the package)."""

__version__ = "0.1.0.dev0"
