"""The paper's Table 1 in miniature: open-domain QA after fine-tuning from REALM pre-training, from its warm start
alone (the ORQA-style baseline: ICT retriever, reading encoder) and from random weights, at the same budget.

One `realm-hf pretrain` run (given with `--pretrained_dir`, or run here with the defaults) provides the world, the
model after its warm starts and the REALM pre-trained model. Each start is fine-tuned with `realm-hf finetune`'s job
(`realm_hf.demo.openqa.run_finetune`, same settings and seed) on the questions about the people whose sentences were
in the pre-training stream, and evaluated on those about the held-out people (never a training target of either
stage). Reported per start: gold-document recall@1 / @5 of the retriever and exact match, before fine-tuning
(zero-shot retrieval; the span scorer is new) and after. The paper's ordering is REALM > ORQA > none.

Usage:

    python benchmarks/table1_openqa.py --output benchmarks/results/table1_openqa.json
    python benchmarks/table1_openqa.py --pretrained_dir realm-demo --output table1.json   # reuse a finished run
    python benchmarks/table1_openqa.py --pretrained_dir realm-demo --seeds 0 1 2   # fine-tuning seeds
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from dataclasses import asdict
from pathlib import Path

from _common import command_line, machine_info, write_results

from realm_hf.demo.job import DemoArguments, run_demo
from realm_hf.demo.openqa import INITS, SUPERVISIONS, FinetuneArguments, run_finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = FinetuneArguments()
    parser.add_argument(
        "--pretrained_dir", type=Path, default=None,
        help="A finished `realm-hf pretrain` run; without it, one runs here with the defaults (about 8 minutes).",
    )  # fmt: skip
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS, help="Starting points to compare.")
    parser.add_argument("--max_steps", type=int, default=defaults.max_steps, help="Fine-tuning steps.")
    parser.add_argument(
        "--embedder_learning_rate", type=float, default=defaults.embedder_learning_rate, help="Query embedder's rate."
    )
    parser.add_argument(
        "--retriever_supervision", default=defaults.retriever_supervision, choices=SUPERVISIONS,
        help="What fine-tuning trains the retriever toward: every block containing the answer (the paper) or the gold "
        "documents.",
    )  # fmt: skip
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[defaults.seed],
        help="Fine-tuning seeds; every start runs once per seed.",
    )
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        pretrained_dir = args.pretrained_dir
        if pretrained_dir is None:
            pretrained_dir = Path(workdir) / "realm-demo"
            run_demo(DemoArguments(output_dir=str(pretrained_dir), disable_tqdm=True))
        rows = []
        for seed, init in itertools.product(args.seeds, args.inits):
            finetune_args = FinetuneArguments(
                pretrained_dir=str(pretrained_dir), init=init, output_dir=str(Path(workdir) / f"openqa-{init}"),
                max_steps=args.max_steps, embedder_learning_rate=args.embedder_learning_rate, seed=seed,
                retriever_supervision=args.retriever_supervision,
                save_steps=0, disable_tqdm=True,
            )  # fmt: skip
            report = run_finetune(finetune_args)
            keys = ("init", "before", "after", "train_seconds", "total_seconds")
            rows.append({"seed": seed, **{key: report[key] for key in keys}})
            print(markdown_table(rows), flush=True)
            result = {
                "machine": machine_info(),
                "command": command_line(),
                "pretrained_run": "given" if args.pretrained_dir else "realm-hf pretrain defaults, run here",
                "seeds": args.seeds,
                "settings": {
                    k: v for k, v in asdict(finetune_args).items() if k not in ("output_dir", "init", "seed")
                },
                "num_train_questions": report["num_train_questions"],
                "num_eval_questions": report["num_eval_questions"],
                "starts": rows,
            }
            write_results(args.output, result)


_NAMES = {"realm": "REALM pre-trained", "warm_start": "warm start only (ORQA-style)", "random": "random weights"}


def markdown_table(rows: list[dict]) -> str:
    """The README's table: one line per starting point, held-out questions."""
    lines = [
        "| start | seed | gold recall@1 before -> after | gold recall@5 before -> after | exact match after | "
        "fine-tuning s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        before, after = row["before"], row["after"]
        lines.append(
            f"| {_NAMES[row['init']]} | {row['seed']} | {before['gold_recall_at_1']:.1%} -> {after['gold_recall_at_1']:.1%} | "
            f"{before['gold_recall_at_5']:.1%} -> {after['gold_recall_at_5']:.1%} | {after['exact_match']:.1f} | "
            f"{row['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
