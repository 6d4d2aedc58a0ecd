"""Helpers shared by several test modules (fixtures live in `conftest.py`)."""

from pathlib import Path

import datasets
import numpy as np

from realm_hf.retrieval.corpus import tokenize_blocks
from realm_hf.retrieval.index import RealmIndex
from realm_hf.retrieval.legacy import load_legacy_block_emb
from realm_hf.retrieval.retriever import RealmRetriever


#: Tiny checkpoints saved by the original implementation (transformers 4.46.3), with their inputs and outputs.
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"


def make_corpus(texts, tokenizer) -> datasets.Dataset:
    """A corpus of `texts`, one pre-tokenized block each."""
    return tokenize_blocks(datasets.Dataset.from_dict({"text": list(texts)}), tokenizer)


def make_retriever(texts, tokenizer, embeddings=None) -> RealmRetriever:
    """A retriever over `texts` (one block each), with the given block embeddings (the identity by default)."""
    corpus = make_corpus(texts, tokenizer)
    if embeddings is None:
        embeddings = np.eye(len(texts), dtype=np.float32)
    index = RealmIndex.build(corpus, np.asarray(embeddings, dtype=np.float32), show_progress=False)
    return RealmRetriever(index, tokenizer)


def openqa_retriever(tokenizer, blocks, source="legacy_bin") -> RealmRetriever:
    """The retriever of the reference open-QA checkpoint: its block embeddings over `blocks`."""
    block_emb = load_legacy_block_emb(REFERENCE / "openqa" / source)
    return make_retriever(blocks, tokenizer, embeddings=block_emb.numpy())


class RunsCode:
    """Unpickling it creates the file `path`: the stand-in for a hostile payload that runs code when loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
