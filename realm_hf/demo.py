"""The embedded default job: REALM pre-training from random initialisation on the synthetic knowledge corpus.

Everything is generated in code (corpus, vocabulary, model), so the job needs no download. It reports, over the
steps, the masked-LM loss and two accuracies on masked facts whose own document is excluded from retrieval:

- retrieval accuracy: how often the top retrieved document (the null document aside) is the other document that
  states the masked fact (chance is 1 / (number of documents - 1));
- masked-LM accuracy on the salient span: how often the marginal prediction of the masked fact is right.

The pipeline is the paper's: the retriever is warm-started with the Inverse Cloze Task (`ict_steps`), then REALM
pre-training trains the knowledge-augmented encoder and, at `retriever_learning_rate`, both embedders through the
retrieval. Both accuracies are measured at random initialisation, after the warm start and during pre-training.
The default retriever learning rate is far below the encoder's: while the encoder has not yet learned to read the
retrieved documents, the retrieval gradient carries no signal and, at the encoder's rate, erodes the warm-started
retriever within tens of steps (see `benchmarks/ablate_pretraining.py`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging

from .configuration_realm import RealmConfig
from .corpus import tokenize_blocks
from .data_collator import DataCollatorForInverseClozeTask, DataCollatorForRealmPreTraining, prepare_ict_examples
from .embedding import embed_corpus
from .ict import InverseClozeTaskArguments, train_inverse_cloze_task
from .index import RealmIndex
from .masking import tag_salient_spans
from .modeling_realm import RealmForPreTraining
from .pretraining import RealmPreTrainingArguments, train_realm
from .synthetic import make_synthetic_knowledge
from .tokenization_realm import RealmTokenizerFast


logger = logging.get_logger(__name__)


@dataclass
class DemoArguments:
    """Arguments of the `realm-hf pretrain` demo."""

    output_dir: str = "realm-demo"
    max_steps: int = 600
    batch_size: int = 32
    learning_rate: float = 1e-3
    retriever_learning_rate: float | None = 1e-6
    ict_learning_rate: float = 1e-3
    num_people: int = 300
    num_cities: int = 50
    ict_steps: int = 100
    seed: int = 0
    index_refresh_steps: int = 20
    index_refresh_mode: str = "sync"
    masking: str = "salient_span"
    use_null_document: bool = True
    hidden_size: int = 128
    num_hidden_layers: int = 2
    eval_steps: int = 100
    num_eval_facts: int = 256
    show_progress: bool = True


def build_tokenizer(vocabulary: list[str], directory: Path) -> RealmTokenizerFast:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    return RealmTokenizerFast.from_pretrained(str(directory))


def demo_config(tokenizer, args: DemoArguments) -> RealmConfig:
    hidden = args.hidden_size
    return RealmConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=max(1, hidden // 32),
        intermediate_size=hidden * 2,
        retriever_proj_size=64,
        max_position_embeddings=256,
        num_candidates=8,
        block_seq_len=128,
        use_null_document=args.use_null_document,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def masked_facts(tokenizer, facts) -> dict[str, torch.Tensor]:
    """Masks the answer of every fact sentence (its salient span) and keeps its evidence document."""
    batch = tokenizer(list(facts["sentence"]), padding=True, return_tensors="pt")
    labels = torch.full_like(batch.input_ids, -100)
    for i, answer in enumerate(list(facts["answer"])):
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        row = batch.input_ids[i].tolist()
        start = next(p for p in range(len(row)) if row[p : p + len(answer_ids)] == answer_ids)
        labels[i, start : start + len(answer_ids)] = batch.input_ids[i, start : start + len(answer_ids)]
        batch.input_ids[i, start : start + len(answer_ids)] = tokenizer.mask_token_id
    return {
        **batch,
        "labels": labels,
        "doc_ids": torch.tensor(list(facts["doc_id"])),
        "evidence_doc_ids": torch.tensor(list(facts["evidence_doc_id"])),
    }


def make_fact_evaluator(tokenizer, facts, block_doc_ids: np.ndarray, batch_size: int = 64):
    """`eval_fn(model, retriever, step)` for [`train_realm`]: retrieval and masked-LM accuracy on masked facts."""
    data = masked_facts(tokenizer, facts)

    def evaluate(model, retriever, step) -> dict:
        correct_top1 = correct_tokens = total_tokens = 0
        count = data["labels"].size(0)
        for start in range(0, count, batch_size):
            part = {k: v[start : start + batch_size] for k, v in data.items()}
            evidence = part.pop("evidence_doc_ids")
            out = model(**part)
            retrieved = out.retrieved_block_ids
            first_real = retrieved[:, 1] if model.config.use_null_document else retrieved[:, 0]
            correct_top1 += int((torch.from_numpy(block_doc_ids[first_real.numpy()]) == evidence).sum())
            correct_tokens += int(out.masked_lm_correct.sum())
            total_tokens += out.masked_lm_correct.numel()
        return {"retrieval_accuracy": correct_top1 / count, "eval_masked_lm_accuracy": correct_tokens / total_tokens}

    return evaluate


def run_demo(args: DemoArguments) -> dict:
    """Runs the demo and writes `report.json` (and `report.png` when matplotlib is installed) to `output_dir`."""
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    output_dir = Path(args.output_dir)
    knowledge = make_synthetic_knowledge(num_people=args.num_people, num_cities=args.num_cities, seed=args.seed)
    tokenizer = build_tokenizer(knowledge.vocabulary(), output_dir / "tokenizer")
    corpus = tokenize_blocks(knowledge.documents, tokenizer)
    sentences = tag_salient_spans(knowledge.documents, tokenizer)
    sentences = sentences.filter(lambda row: len(row["salient_spans"]) > 0)
    model = RealmForPreTraining(demo_config(tokenizer, args))
    facts = knowledge.facts.shuffle(seed=args.seed).select(range(min(args.num_eval_facts, len(knowledge.facts))))
    evaluate = make_fact_evaluator(tokenizer, facts, np.asarray(corpus["doc_id"]))
    at_random_init = _initial_eval(model, _build_index(model, corpus, tokenizer), tokenizer, evaluate)
    ict_history, ict_began = [], time.perf_counter()
    if args.ict_steps > 0:
        ict_examples = prepare_ict_examples(knowledge.documents, tokenizer)
        ict_collator = DataCollatorForInverseClozeTask(
            tokenizer, query_max_length=48, block_max_length=128, seed=args.seed
        )
        ict_args = InverseClozeTaskArguments(
            max_steps=args.ict_steps, per_device_train_batch_size=args.batch_size, learning_rate=args.ict_learning_rate,
            seed=args.seed, show_progress=args.show_progress,
        )  # fmt: skip
        ict_history = train_inverse_cloze_task(model, ict_examples, ict_collator, ict_args)
    ict_seconds = time.perf_counter() - ict_began
    index = _build_index(model, corpus, tokenizer)
    collator = DataCollatorForRealmPreTraining(tokenizer, masking=args.masking, max_length=48, seed=args.seed)
    train_args = RealmPreTrainingArguments(
        output_dir=str(output_dir),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        retriever_learning_rate=args.retriever_learning_rate,
        warmup_steps=min(50, args.max_steps // 10),
        index_refresh_steps=args.index_refresh_steps,
        index_refresh_mode=args.index_refresh_mode,
        save_steps=0,
        logging_steps=10,
        eval_steps=args.eval_steps,
        seed=args.seed,
        embed_batch_size=256,
        show_progress=args.show_progress,
    )
    before = _initial_eval(model, index, tokenizer, evaluate)
    began = time.perf_counter()
    history = train_realm(model, tokenizer, index, sentences, collator, train_args, eval_fn=evaluate)
    report = {
        "documents": len(knowledge.documents),
        "training_sentences": len(sentences),
        "eval_facts": len(facts),
        "chance_retrieval_accuracy": 1 / (len(knowledge.documents) - 1),
        "random_init": at_random_init,
        "before": before,
        "after": {k: history[-1][k] for k in ("retrieval_accuracy", "eval_masked_lm_accuracy") if k in history[-1]},
        "seconds": time.perf_counter() - began,
        "ict_seconds": ict_seconds,
        "total_seconds": time.perf_counter() - started,
        "steps": args.max_steps,
        "ict_history": ict_history,
        "history": history,
    }
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    _plot(history, at_random_init, before, output_dir / "report.png")
    return report


def _build_index(model, corpus, tokenizer) -> RealmIndex:
    embeddings = embed_corpus(model.embedder, corpus, tokenizer, show_progress=False)
    return RealmIndex.build(corpus, embeddings, show_progress=False)


def _initial_eval(model, index, tokenizer, evaluate) -> dict:
    from .retrieval_realm import RealmRetriever

    retriever = RealmRetriever(index, tokenizer)
    model.set_retriever(retriever)
    model.eval()
    with torch.no_grad():
        result = evaluate(model, retriever, 0)
    model.train()
    return result


def _plot(history: list[dict], at_random_init: dict, before: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping the plot (pip install matplotlib).")
        return
    steps = [r["step"] for r in history]
    evals = [(0, before)] + [(r["step"], r) for r in history if "retrieval_accuracy" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(steps, [r["loss"] for r in history])
    left.set(title="Marginal masked-LM loss", xlabel="step", ylabel="loss")
    right.plot([s for s, _ in evals], [r["retrieval_accuracy"] for _, r in evals], marker="o", label="retrieval top-1")
    right.plot([s for s, _ in evals], [r["eval_masked_lm_accuracy"] for _, r in evals], marker="s", label="masked-LM")
    right.plot([0], [at_random_init["retrieval_accuracy"]], marker="x", linestyle="", color="gray",
               label="retrieval top-1 before the ICT warm start")  # fmt: skip
    right.set(title="Accuracy on masked facts", xlabel="REALM pre-training step (after ICT)", ylim=(-0.02, 1.02))
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
