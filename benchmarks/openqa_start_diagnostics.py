"""Zero-shot retrieval of open-QA starting points, before fine-tuning: what tells a start that fine-tunes well from one
that plateaus.

For each `realm-hf pretrain` run and each start (`warm_start`: the model before REALM pre-training; `realm`: after),
on the held-out questions: gold-document recall@1 of the questions, and of the person's name alone as the query (the
title of the gold document), and how sharp retrieval is (mean entropy of the softmax over each question's top-16
scores, the distribution the retriever loss is a marginal over). `benchmarks/README.md` compares the default run
(ICT-22 + REALM, which fine-tunes to 90-100% recall@1) with a run of 100 ICT steps (which plateaus at about 44%).

Usage:

    python benchmarks/openqa_start_diagnostics.py --pretrained_dirs realm-demo realm-demo-ict100 \\
        --output benchmarks/results/openqa_start_diagnostics.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import command_line, machine_info, write_results

from realm_hf.demo.openqa import initial_model, load_world_questions
from realm_hf.evaluation.open_qa import gold_passage_recall


@torch.no_grad()
def top_k_entropy(model, tokenizer, questions: list[str], k: int = 16) -> float:
    """Mean entropy of the softmax over each question's top-`k` retrieval scores."""
    model.eval()
    batch = tokenizer(questions, padding=True, truncation=True, max_length=64, return_tensors="pt")
    query = model.embedder(**batch, return_dict=True).projected_score
    scores, _ = model.retriever.index.search(query.float().numpy(), k)
    probs = torch.from_numpy(scores).softmax(-1)
    return float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())


def diagnose(pretrained_dir: Path, init: str) -> dict:
    _, evaluation, _ = load_world_questions(pretrained_dir)
    model, tokenizer = initial_model(pretrained_dir, init)
    corpus = model.retriever.index.corpus
    title_of = dict(zip(corpus["doc_id"], corpus["title"]))
    names = [title_of[gold[0]] for gold in evaluation["gold_doc_ids"]]
    gold = evaluation["gold_doc_ids"]
    embedder, index = model.embedder, model.retriever.index
    return {
        "run": pretrained_dir.name,
        "init": init,
        "question": gold_passage_recall(embedder, index, tokenizer, evaluation["question"], gold, ks=(1, 16)),
        "name_only": gold_passage_recall(embedder, index, tokenizer, names, gold, ks=(1, 16)),
        "top16_entropy": top_k_entropy(model, tokenizer, list(evaluation["question"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained_dirs", type=Path, nargs="+", required=True, help="Finished pretrain runs.")
    parser.add_argument("--inits", nargs="+", default=["warm_start", "realm"], choices=("warm_start", "realm"))
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()
    rows = [diagnose(directory, init) for directory in args.pretrained_dirs for init in args.inits]
    print("| run | start | question recall@1 / @16 | name-only recall@1 / @16 | top-16 entropy |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        q, n = row["question"], row["name_only"]
        print(
            f"| {row['run']} | {row['init']} | {q['gold_recall_at_1']:.1%} / {q['gold_recall_at_16']:.1%} | "
            f"{n['gold_recall_at_1']:.1%} / {n['gold_recall_at_16']:.1%} | {row['top16_entropy']:.2f} |"
        )
    write_results(args.output, {"machine": machine_info(), "command": command_line(), "starts": rows})


if __name__ == "__main__":
    main()
