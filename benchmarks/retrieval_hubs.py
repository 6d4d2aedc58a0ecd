"""Hubs in REALM's retrieval: does a direction common to all queries make a few documents the top-1 for many facts?

Hypothesis (from the seed-2 plateau of `realm-hf pretrain`): with the query and document towers shared, the query
embeddings share a large common component `m` (their mean), so every document `d` gets the same bonus `m . d` for
every query; the few documents with the largest bonus become hubs and take the top-1 from the evidence. If so,
centring the queries (subtracting the mean query of the training sentences) at search time removes the hubs and
raises top-1 retrieval of the evidence document. If centred retrieval is no better, the hubs are not the cause.

For each checkpoint of a `realm-hf pretrain` run (`warm-start/`, the model before REALM pre-training; `final/`, after),
on the run's evaluation facts and held-out facts (the demo's masked fact sentences, the fact's own document excluded
as in pre-training): top-1 retrieval of the evidence document with raw and with centred queries, the share of all
top-1 retrievals taken by the 3 most retrieved documents, and the norm of the mean query relative to the mean norm
of a query. The mean query is taken over the masked sentences of all training facts (no evidence label is used).

Usage:

    realm-hf pretrain --seed 2 --output_dir realm-demo-seed2
    python benchmarks/retrieval_hubs.py --run_dirs realm-demo-seed2 --output benchmarks/results/retrieval_hubs.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _common import command_line, machine_info, write_results

from realm_hf import RealmForPreTraining, RealmTokenizerFast
from realm_hf.demo.job import ARGS_FILE, WARM_START_DIR, fact_splits, held_out_split, masked_facts
from realm_hf.demo.synthetic import make_synthetic_knowledge
from realm_hf.retrieval.index import RealmIndex


@torch.no_grad()
def query_embeddings(model, data: dict[str, torch.Tensor], batch_size: int = 128) -> np.ndarray:
    keys = ("input_ids", "attention_mask", "token_type_ids")
    parts = [
        model.query_embedder(**{k: data[k][i : i + batch_size] for k in keys}).projected_score
        for i in range(0, data["input_ids"].size(0), batch_size)
    ]
    return torch.cat(parts).float().numpy()


def top1(queries: np.ndarray, documents: np.ndarray, doc_ids: np.ndarray, own_doc: np.ndarray) -> np.ndarray:
    """The document id of each query's best-scoring block, its own document excluded."""
    scores = queries @ documents.T
    scores[doc_ids[None, :] == own_doc[:, None]] = -np.inf
    return doc_ids[scores.argmax(-1)]


def hub_measures(model, index: RealmIndex, data: dict, mean_query: np.ndarray) -> dict:
    queries = query_embeddings(model, data)
    documents, doc_ids = index.embeddings, np.asarray(index.corpus["doc_id"])
    own, evidence = data["doc_ids"].numpy(), data["evidence_doc_ids"].numpy()
    result = {}
    for name, q in (("raw", queries), ("centred", queries - mean_query)):
        retrieved = top1(q, documents, doc_ids, own)
        _, counts = np.unique(retrieved, return_counts=True)
        result[name] = {
            "retrieval_accuracy": float((retrieved == evidence).mean()),
            "top3_hub_share": float(np.sort(counts)[-3:].sum() / len(retrieved)),
            "distinct_top1_documents": int(len(counts)),
        }
    return result


def diagnose(run_dir: Path, checkpoint: str) -> dict:
    args = json.loads((run_dir / ARGS_FILE).read_text())
    knowledge = make_synthetic_knowledge(
        num_people=args["num_people"], num_cities=args["num_cities"], seed=args["seed"]
    )
    held_out_docs = held_out_split(args["num_people"], args["held_out_fraction"], args["seed"])
    training, evaluation, held_out = fact_splits(knowledge, held_out_docs, args["num_eval_facts"], args["seed"])
    directory = run_dir / checkpoint
    tokenizer = RealmTokenizerFast.from_pretrained(directory)
    model = RealmForPreTraining.from_pretrained(directory).eval()
    index = RealmIndex.from_pretrained(directory / "index")
    train_queries = query_embeddings(model, masked_facts(tokenizer, training))
    mean_query = train_queries.mean(0)
    return {
        "run": run_dir.name,
        "checkpoint": checkpoint,
        "seed": args["seed"],
        "mean_query_norm_ratio": float(np.linalg.norm(mean_query) / np.linalg.norm(train_queries, axis=1).mean()),
        "eval": hub_measures(model, index, masked_facts(tokenizer, evaluation), mean_query),
        "held_out": hub_measures(model, index, masked_facts(tokenizer, held_out), mean_query),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dirs", nargs="+", required=True, help="Output folders of `realm-hf pretrain` runs.")
    parser.add_argument(
        "--checkpoints", nargs="+", default=[WARM_START_DIR, "final"], help="Checkpoints of each run to diagnose."
    )
    parser.add_argument("--output", type=Path, default=None, help="Where to write the JSON results.")
    args = parser.parse_args()
    results = [diagnose(Path(run), checkpoint) for run in args.run_dirs for checkpoint in args.checkpoints]
    for r in results:
        print(
            f"{r['run']:>24} {r['checkpoint']:>10}  mean-query norm {r['mean_query_norm_ratio']:.2f}  "
            + "  ".join(
                f"{split} {r[split]['raw']['retrieval_accuracy']:.1%} -> centred {r[split]['centred']['retrieval_accuracy']:.1%}"
                f" (hubs {r[split]['raw']['top3_hub_share']:.0%} -> {r[split]['centred']['top3_hub_share']:.0%})"
                for split in ("eval", "held_out")
            )
        )
    if args.output is not None:
        write_results(args.output, {"command": command_line(), "machine": machine_info(), "results": results})


if __name__ == "__main__":
    main()
