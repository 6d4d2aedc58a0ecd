"""Open-QA setup shared by `bench_finetune_step.py` and `bench_eval_throughput.py`: one corpus, one set of questions,
one set of weights, and a `RealmForOpenQA` built from them in either implementation.

`prepare_workdir` runs in the realm_hf environment and writes everything both sides read:

* `tokenizer/vocab.txt`: the bert-base-uncased WordPiece vocabulary (30,522 tokens), from `--data-dir`;
* `corpus/` (a `datasets` corpus with `title`, `text`, `token_ids`, ...) and `blocks.json` (the block texts, what the
  reference's `block_records` holds): real Wikipedia text, the SQuAD-open passages split into REALM blocks of at most
  `--max-block-length` wordpieces with `split_documents_into_blocks`. 2,067 passages give 2,174 blocks; to fill a
  5,000-block beam the passages are also split a second and a third time with their first one and two sentences
  removed (different text, so different blocks), exact duplicates dropped. Every block text tokenizes to exactly its
  stored `token_ids` (checked), so the reference, which re-tokenizes the text, sees the same tokens;
* `block_emb.npy`: the block embeddings, seeded Gaussian vectors (the benchmarks time the step, not the retrieval
  quality of an untrained model), the same matrix in the reference's `block_emb` buffer and in the `RealmIndex`;
* `questions.json`: SQuAD-open dev questions with their answers;
* `config.json`: the model configuration.

The reference process initialises a `RealmForOpenQA` with the seed and saves its weights (`weights.safetensors`,
without `block_emb`); both sides load them strictly.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import DEFAULT_DATA_DIR, load_state_strict


MODEL_PRESETS = {
    # As small as the test fixtures' models: nearly all the time goes to the work around the transformer.
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256},
    # A small REALM: the per-question work outside the transformer (retrieval, reader inputs, answer labels)
    # dominates, as with any model on a GPU.
    "small": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512},
    # The size of the MiniLM encoder (6 layers, 384 hidden); random weights.
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
}
PASSAGES = "squad_open/squad_v1.1_dev_passages.jsonl"
QUESTIONS = "squad_open/squad_v1.1_dev_qa.dev.jsonl"
VOCAB = "bert_uncased_vocab/vocab.txt"
PAD = 0


def add_openqa_arguments(parser: argparse.ArgumentParser, searcher_beam_size: int) -> None:
    """Corpus, question and model-size arguments of the open-QA benchmarks."""
    parser.add_argument("--data-dir", type=str, default=str(DEFAULT_DATA_DIR), help="holds squad_open/ and the vocab")
    parser.add_argument("--preset", choices=sorted(MODEL_PRESETS), default="small", help="model size (random init)")
    parser.add_argument("--min-blocks", type=int, default=5000, help="corpus size to reach (at least the beam)")
    parser.add_argument("--max-block-length", type=int, default=288)
    parser.add_argument("--searcher-beam-size", type=int, default=searcher_beam_size)
    parser.add_argument("--reader-beam-size", type=int, default=5)
    parser.add_argument("--reader-seq-len", type=int, default=320)
    parser.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout while timing")
    parser.add_argument("--seed", type=int, default=0)


def model_config(args: argparse.Namespace, num_blocks: int) -> dict[str, Any]:
    """The `RealmConfig` keyword arguments both implementations use (dropout is set per worker)."""
    return {
        "vocab_size": 30522,
        **MODEL_PRESETS[args.preset],
        "retriever_proj_size": 128,
        "span_hidden_size": 256,
        "max_span_width": 10,
        "reader_beam_size": args.reader_beam_size,
        "searcher_beam_size": args.searcher_beam_size,
        "reader_seq_len": args.reader_seq_len,
        "num_block_records": num_blocks,
        "pad_token_id": PAD,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Preparation (realm_hf environment)
# ---------------------------------------------------------------------------------------------------------------------


def build_corpus(passages, tokenizer, min_blocks: int, max_block_length: int):
    """SQuAD-open passages as REALM blocks; passages re-split without their first sentences until `min_blocks`."""
    import datasets

    from realm_hf.retrieval.corpus import sentence_boundaries, split_documents_into_blocks

    titles, texts = list(passages["title"]), list(passages["text"])
    corpus, seen, rows, variants = None, set(), [], 0
    for dropped in range(0, 8):
        documents = {"title": [], "text": []}
        for title, text in zip(titles, texts):
            starts = sentence_boundaries(text)
            if dropped == 0 or len(starts) >= dropped:
                documents["title"].append(title)
                documents["text"].append(text if dropped == 0 else text[int(starts[dropped - 1]) :])
        if not documents["text"]:
            break
        blocks = split_documents_into_blocks(
            datasets.Dataset.from_dict(documents), tokenizer, max_block_length=max_block_length, desc=None
        )
        variants += 1
        for row in blocks:
            if row["text"] not in seen:
                seen.add(row["text"])
                rows.append(row)
        if len(rows) >= min_blocks:
            break
    if len(rows) < min_blocks:
        raise SystemExit(f"Only {len(rows)} distinct blocks could be made; lower --min-blocks.")
    corpus = datasets.Dataset.from_list(rows, features=blocks.features)
    return corpus, {"num_blocks": len(corpus), "passage_variants": variants, "num_passages": len(titles)}


def prepare_workdir(args: argparse.Namespace, workdir: Path, num_questions: int) -> dict[str, Any]:
    """Writes tokenizer, corpus, block texts, block embeddings, questions and config into `workdir`."""
    from realm_hf import RealmTokenizerFast
    from realm_hf.evaluation.qa_data import load_squad_open

    data_dir = Path(args.data_dir)
    for relative in (PASSAGES, QUESTIONS, VOCAB):
        if not (data_dir / relative).exists():
            raise SystemExit(f"{data_dir / relative} is missing; give --data-dir (the folder with squad_open/).")
    (workdir / "tokenizer").mkdir(parents=True, exist_ok=True)
    shutil.copy(data_dir / VOCAB, workdir / "tokenizer" / "vocab.txt")
    tokenizer = RealmTokenizerFast.from_pretrained(str(workdir / "tokenizer"))
    passages, questions = load_squad_open(data_dir / PASSAGES, data_dir / QUESTIONS)
    corpus, corpus_info = build_corpus(passages, tokenizer, args.min_blocks, args.max_block_length)
    if len(corpus) < args.searcher_beam_size:
        raise SystemExit(f"The corpus has {len(corpus)} blocks, fewer than the beam {args.searcher_beam_size}.")
    texts = list(corpus["text"])
    retokenized = tokenizer(texts, add_special_tokens=False)["input_ids"]
    mismatched = sum(a != list(b) for a, b in zip(retokenized, corpus["token_ids"]))
    if mismatched:
        raise SystemExit(f"{mismatched} block texts do not tokenize to their stored token ids.")
    corpus.save_to_disk(str(workdir / "corpus"))
    (workdir / "blocks.json").write_text(json.dumps(texts))
    lengths = np.array([len(ids) for ids in corpus["token_ids"]])

    generator = np.random.default_rng(args.seed)
    block_emb = generator.standard_normal((len(corpus), 128), dtype=np.float32)
    np.save(workdir / "block_emb.npy", block_emb)

    count = min(num_questions, len(questions))
    selected = [
        {"question": q, "answers": list(a)}
        for q, a in zip(questions["question"][:count], questions["answers"][:count])
    ]
    (workdir / "questions.json").write_text(json.dumps(selected))
    config = model_config(args, len(corpus))
    (workdir / "config.json").write_text(json.dumps(config, indent=2))
    return {
        **corpus_info,
        "block_tokens_mean": float(lengths.mean()),
        "block_tokens_max": int(lengths.max()),
        "blocks_retokenized_identically": True,
        "num_questions": count,
        "model_config": config,
    }


# ---------------------------------------------------------------------------------------------------------------------
# The two implementations (each in its own environment)
# ---------------------------------------------------------------------------------------------------------------------


def init_reference_weights(workdir: Path, seed: int) -> dict[str, Any]:
    """Reference environment: initialises a `RealmForOpenQA` with `seed` and saves its weights (no `block_emb`)."""
    from safetensors.torch import save_file
    from transformers import __version__

    config = reference_config(workdir, dropout=0.0)
    torch.manual_seed(seed)
    from transformers.models.deprecated.realm import RealmForOpenQA

    model = RealmForOpenQA(config)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != "block_emb"}
    save_file(state, str(workdir / "weights.safetensors"))
    return {"transformers": __version__, "num_parameters": sum(p.numel() for p in model.parameters())}


def reference_config(workdir: Path, dropout: float):
    from transformers.models.deprecated.realm import RealmConfig

    kwargs = json.loads((workdir / "config.json").read_text())
    return RealmConfig(**kwargs, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


class RecordingRetriever:
    """Wraps the reference `RealmRetriever` and keeps what it returned last (retrieved ids, answer labels)."""

    def __init__(self, retriever):
        self.inner = retriever
        self.last: dict[str, Any] = {}

    def __call__(self, retrieved_block_ids, question_input_ids, answer_ids, max_length=None, return_tensors="pt"):
        out = self.inner(retrieved_block_ids, question_input_ids, answer_ids, max_length, return_tensors)
        self.last = {"retrieved_block_ids": retrieved_block_ids.tolist(), "has_answers": out[0]}
        return out


class ReferenceOpenQA:
    """The original transformers 4.x `RealmForOpenQA` + `RealmRetriever` (block records as bytes), batch size 1."""

    name = "reference"

    def __init__(self, workdir: Path, dropout: float, record: bool = False):
        from safetensors.torch import load_file
        from transformers.models.deprecated.realm import RealmForOpenQA, RealmRetriever, RealmTokenizerFast

        self.tokenizer = RealmTokenizerFast.from_pretrained(str(workdir / "tokenizer"))
        texts = json.loads((workdir / "blocks.json").read_text())
        block_records = np.array([text.encode("utf-8") for text in texts], dtype=object)
        retriever = RealmRetriever(block_records, self.tokenizer)
        self.retriever = RecordingRetriever(retriever) if record else retriever
        self.model = RealmForOpenQA(reference_config(workdir, dropout), retriever=self.retriever)
        self.unexpected = load_state_strict(
            self.model, load_file(str(workdir / "weights.safetensors")), ignore=("position_ids", "block_emb")
        )
        with torch.no_grad():
            self.model.block_emb.copy_(torch.from_numpy(np.load(workdir / "block_emb.npy")))
        self.attn_implementation = "eager"

    def forward(self, examples: list[dict], with_answers: bool = True):
        """One question (the reference only takes batch size 1): tokenize, retrieve, read."""
        if len(examples) != 1:
            raise ValueError("The reference RealmForOpenQA takes one question at a time.")
        question = self.tokenizer([examples[0]["question"]], return_tensors="pt").to(self.model.device)
        answer_ids = None
        if with_answers:
            answer_ids = self.tokenizer(
                examples[0]["answers"],
                add_special_tokens=False,
                return_token_type_ids=False,
                return_attention_mask=False,
            ).input_ids
        return self.model(**question, answer_ids=answer_ids, return_dict=True)

    def answers(self, examples: list[dict]) -> list[str]:
        """Predicted answer strings, one question per forward pass."""
        out = []
        for example in examples:
            output = self.forward([example], with_answers=False)
            out.append(self.tokenizer.decode(output.predicted_answer_ids, skip_special_tokens=True))
        return out


class RealmHfOpenQA:
    """realm_hf `RealmForOpenQA` over a `RealmIndex` (exact search) of the same corpus, with the package's collator."""

    name = "realm_hf"

    def __init__(self, workdir: Path, dropout: float, attn_implementation: str | None = None):
        import datasets
        from safetensors.torch import load_file

        from realm_hf import RealmConfig, RealmForOpenQA, RealmIndex, RealmRetriever, RealmTokenizerFast
        from realm_hf.training.openqa import DataCollatorForRealmOpenQA

        self.tokenizer = RealmTokenizerFast.from_pretrained(str(workdir / "tokenizer"))
        corpus = datasets.load_from_disk(str(workdir / "corpus"))
        index = RealmIndex.build(corpus, np.load(workdir / "block_emb.npy"), show_progress=False)
        kwargs = json.loads((workdir / "config.json").read_text())
        config = RealmConfig(**kwargs, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        self.model = RealmForOpenQA(config, retriever=RealmRetriever(index, self.tokenizer))
        if attn_implementation:
            self.model.set_attn_implementation(attn_implementation)
        self.unexpected = load_state_strict(self.model, load_file(str(workdir / "weights.safetensors")))
        self.collator = DataCollatorForRealmOpenQA(self.tokenizer)
        self.attn_implementation = self.model.config._attn_implementation

    def forward(self, examples: list[dict], with_answers: bool = True):
        """A batch of questions: collate (tokenize questions and answers), retrieve, read."""
        batch = self.collator(examples)
        return self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            answer_ids=batch["answer_ids"] if with_answers else None,
            return_dict=True,
        )
