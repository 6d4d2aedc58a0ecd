"""Why where-questions lag behind year questions in open-QA fine-tuning: a test of the answer-string hypothesis.

Hypothesis. REALM fine-tuning (as in the paper) trains the retriever toward every retrieved block that contains the
answer string. A birth year names about one person of the demo's world, but a city is named by about 24 documents
(the city's own document and the people born or working there), so for "Where was X born?" and "Where did X work?"
the signal rewards blocks of the city, not the person's documents; gold-document recall of where-questions then stays
low (17-20% against 100% for years, `benchmarks/README.md`).

Test, from the same REALM pre-trained start and the same budget: fine-tune once with the paper's answer-string
supervision and once with gold-document supervision (`realm-hf finetune --retriever_supervision gold_document`: the
retriever's marginal is over the retrieved blocks of the documents that state the fact; the reader's loss is the
same). The hypothesis predicts that gold-document supervision lifts where-question recall toward the year questions';
if where-questions stay as low, it is refuted. Reported per relation on the held-out questions: gold-document
recall@1, exact match, and what the top-1 block of each question is (a gold document, the answer city's own
document, another person's document containing the answer, or neither).

Usage:

    python benchmarks/openqa_supervision.py --pretrained_dir realm-demo --output benchmarks/results/openqa_supervision.json
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import command_line, machine_info, write_results

from realm_hf.demo.openqa import (
    SUPERVISIONS,
    FinetuneArguments,
    evaluate_questions,
    initial_model,
    load_world_questions,
    run_finetune,
)
from realm_hf.evaluation.metrics.open_qa.open_qa import normalize_answer
from realm_hf.evaluation.open_qa import _answer_in_text, _retrieve
from realm_hf.hub.publish import load_realm


KINDS = ("gold", "answer_city", "other_with_answer", "other")


def retrieved_flags(model, tokenizer, questions, k: int) -> dict[str, np.ndarray]:
    """For the top-`k` blocks of each question, boolean arrays of shape `(len(questions), k)`: `gold` (a block of a
    gold document), `answer` (its title or text contains an answer as whole words) and `answer_city` (its title is
    the answer: the answer city's own document)."""
    model.eval()
    ids = _retrieve(model.embedder, model.retriever.index, tokenizer, list(questions["question"]), k, 64, 64)
    corpus = model.retriever.index.corpus
    flags = {name: np.zeros(ids.shape, dtype=bool) for name in ("gold", "answer", "answer_city")}
    for q, (row_ids, gold, answers) in enumerate(zip(ids.tolist(), questions["gold_doc_ids"], questions["answers"])):
        answers = [normalize_answer(a) for a in answers]
        rows = corpus[row_ids]
        for j, (doc, title, text) in enumerate(zip(rows["doc_id"], rows["title"], rows["text"])):
            flags["gold"][q, j] = doc in gold
            flags["answer"][q, j] = _answer_in_text(answers, normalize_answer(f"{title} {text}"))
            flags["answer_city"][q, j] = normalize_answer(title) in answers
    return flags


def top1_kinds(flags: dict[str, np.ndarray]) -> dict[str, float]:
    """The share of questions whose top-1 block is `gold`, `answer_city`, `other_with_answer` or `other`."""
    gold, city, answer = (flags[name][:, 0] for name in ("gold", "answer_city", "answer"))
    kinds = np.select([gold, city, answer], ["gold", "answer_city", "other_with_answer"], "other")
    return {kind: float(np.mean(kinds == kind)) for kind in KINDS}


def by_relation(questions) -> dict[str, np.ndarray]:
    """The row indices of each relation's questions."""
    relations = np.asarray(questions["relation"])
    return {relation: np.flatnonzero(relations == relation) for relation in sorted(set(relations))}


@torch.no_grad()
def answer_signal(model, tokenizer, questions, k: int) -> dict[str, dict]:
    """What answer-string supervision rewards at the start, per relation: of the top-`k` blocks of each question (the
    blocks its retriever loss is a marginal over), how many contain the answer, how many of those are of a gold
    document, and how often a gold block is among them."""
    flags = retrieved_flags(model, tokenizer, questions, k)
    out = {}
    for relation, rows in by_relation(questions).items():
        with_answer = flags["answer"][rows].sum(-1)
        gold_with_answer = (flags["answer"][rows] & flags["gold"][rows]).sum(-1)
        out[relation] = {
            "num_questions": len(rows),
            "blocks_with_answer": float(with_answer.mean()),
            "gold_blocks_with_answer": float(gold_with_answer.mean()),
            "gold_share_of_answer_blocks": float(gold_with_answer.sum() / max(with_answer.sum(), 1)),
            "gold_retrieved": float(flags["gold"][rows].any(-1).mean()),
        }
    return out


@torch.no_grad()
def per_relation(model, tokenizer, questions) -> dict[str, dict]:
    """Gold recall@1/5, exact match and the top-1 kinds of each relation's questions."""
    out = {}
    for relation, rows in by_relation(questions).items():
        subset = questions.select(rows)
        metrics = evaluate_questions(model, tokenizer, subset)
        out[relation] = {
            "num_questions": len(subset),
            "gold_recall_at_1": metrics["gold_recall_at_1"],
            "gold_recall_at_5": metrics["gold_recall_at_5"],
            "exact_match": metrics["exact_match"],
            "top1_kinds": top1_kinds(retrieved_flags(model, tokenizer, subset, 1)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = FinetuneArguments()
    parser.add_argument("--pretrained_dir", type=Path, required=True, help="A finished `realm-hf pretrain` run.")
    parser.add_argument(
        "--supervisions", nargs="+", default=list(SUPERVISIONS), choices=SUPERVISIONS, help="Supervisions to compare."
    )
    parser.add_argument("--init", default="realm", choices=("realm", "warm_start"), help="Starting point of both.")
    parser.add_argument("--max_steps", type=int, default=defaults.max_steps, help="Fine-tuning steps.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Fine-tuning seeds.")
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()

    train, evaluation, _ = load_world_questions(args.pretrained_dir)
    model, tokenizer = initial_model(args.pretrained_dir, args.init)
    result = {
        "machine": machine_info(),
        "command": command_line(),
        "init": args.init,
        "max_steps": args.max_steps,
        "num_eval_questions": len(evaluation),
        "before": per_relation(model, tokenizer, evaluation),
        "answer_signal_at_start": answer_signal(model, tokenizer, train, defaults.searcher_beam_size),
        "runs": [],
    }
    print(markdown_table("before", None, result["before"]), flush=True)
    print(signal_table(result["answer_signal_at_start"], defaults.searcher_beam_size), flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for seed, supervision in itertools.product(args.seeds, args.supervisions):
            output_dir = Path(workdir) / f"openqa-{supervision}-{seed}"
            report = run_finetune(
                FinetuneArguments(
                    pretrained_dir=str(args.pretrained_dir), init=args.init, output_dir=str(output_dir),
                    max_steps=args.max_steps, seed=seed, retriever_supervision=supervision, save_steps=0,
                    disable_tqdm=True,
                )
            )  # fmt: skip
            model, tokenizer, _ = load_realm(output_dir)
            relations = per_relation(model, tokenizer, evaluation)
            result["runs"].append(
                {
                    "supervision": supervision,
                    "seed": seed,
                    "after": report["after"],
                    "per_relation": relations,
                    "train_seconds": report["train_seconds"],
                }
            )
            print(markdown_table(supervision, seed, relations), flush=True)
            write_results(args.output, result)


def markdown_table(supervision: str, seed: int | None, relations: dict[str, dict]) -> str:
    lines = [
        f"supervision: {supervision}" + ("" if seed is None else f", seed {seed}"),
        "| relation | gold recall@1 | recall@5 | exact match | top-1: gold / answer city / other with answer / other |",
        "|---|---:|---:|---:|---|",
    ]
    for relation, row in relations.items():
        kinds = " / ".join(f"{share:.0%}" for share in row["top1_kinds"].values())
        lines.append(
            f"| {relation} | {row['gold_recall_at_1']:.1%} | {row['gold_recall_at_5']:.1%} | "
            f"{row['exact_match']:.1f} | {kinds} |"
        )
    return "\n".join(lines)


def signal_table(signal: dict[str, dict], k: int) -> str:
    lines = [
        f"answer-string signal at the start (training questions, top-{k} blocks)",
        "| relation | blocks with the answer | of them gold | gold share | gold retrieved |",
        "|---|---:|---:|---:|---:|",
    ]
    for relation, row in signal.items():
        lines.append(
            f"| {relation} | {row['blocks_with_answer']:.2f} | {row['gold_blocks_with_answer']:.2f} | "
            f"{row['gold_share_of_answer_blocks']:.0%} | {row['gold_retrieved']:.0%} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
