"""The paper's pre-training ablations in miniature, on the embedded synthetic corpus (`realm-hf pretrain`'s job).

Each variant runs the demo pipeline (reading warm start of the encoder on other worlds, weak ICT warm start of the
retriever, then REALM pre-training) with one setting changed, from the same seed, and reports top-1 retrieval of the
evidence document and masked-LM accuracy on the masked facts (training and held-out sentences), before and after
pre-training, and the retrieval gain `after - before`:

* `default`: the demo's defaults (index refreshed every step, salient-span masking, null document);
* `stale_index`: the index built after the warm starts is never refreshed;
* `refresh_5`, `refresh_20`, `refresh_100`: the index refreshed every 5 / 20 / 100 steps;
* `random_token`: random-token masking instead of salient spans (BERT's 15%);
* `random_span`: random spans (SpanBERT-style) instead of salient spans;
* `no_null_document`: no null document among the candidates;
* `no_warm_start`: no ICT warm start (random initialisation of the retriever);
* `no_reading_warm_start`: the encoder starts from random weights;
* `retriever_at_encoder_lr`: the embedders train at the encoder's learning rate.

Usage:

    python benchmarks/ablate_pretraining.py --output benchmarks/results/ablate_pretraining.json
    python benchmarks/ablate_pretraining.py --variants default stale_index --max_steps 100   # quicker
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import command_line, machine_info, write_results  # noqa: E402

from realm_hf.demo import DemoArguments, run_demo  # noqa: E402


VARIANTS = {
    "default": {},
    "stale_index": {"index_refresh_steps": 0},
    "refresh_5": {"index_refresh_steps": 5},
    "refresh_20": {"index_refresh_steps": 20},
    "refresh_100": {"index_refresh_steps": 100},
    "random_token": {"masking": "random_token"},
    "random_span": {"masking": "random_span"},
    "no_null_document": {"use_null_document": False},
    "no_warm_start": {"ict_steps": 0},
    "no_reading_warm_start": {"reading_steps": 0},
    "retriever_at_encoder_lr": {"retriever_learning_rate": None},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DemoArguments()
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="Variants to run."
    )
    parser.add_argument("--max_steps", type=int, default=defaults.max_steps, help="REALM pre-training steps.")
    parser.add_argument("--ict_steps", type=int, default=defaults.ict_steps, help="ICT warm-start steps.")
    parser.add_argument("--reading_steps", type=int, default=defaults.reading_steps, help="Reading warm-start steps.")
    parser.add_argument("--num_people", type=int, default=defaults.num_people, help="People of the target world.")
    parser.add_argument("--num_cities", type=int, default=defaults.num_cities, help="Cities of the target world.")
    parser.add_argument(
        "--index_refresh_steps", type=int, default=defaults.index_refresh_steps, help="The default's refresh period."
    )
    parser.add_argument("--seed", type=int, default=0, help="Random seed of every variant.")
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()

    base = DemoArguments(
        max_steps=args.max_steps,
        ict_steps=args.ict_steps,
        reading_steps=args.reading_steps,
        num_people=args.num_people,
        num_cities=args.num_cities,
        index_refresh_steps=args.index_refresh_steps,
        seed=args.seed,
        show_progress=False,
    )
    rows = []
    for name in args.variants:
        with tempfile.TemporaryDirectory() as workdir:
            variant = replace(base, output_dir=workdir, **VARIANTS[name])
            began = time.perf_counter()
            report = run_demo(variant)
            rows.append(
                {
                    "variant": name,
                    "changed": VARIANTS[name],
                    "random_init": report["random_init"],
                    "before": report["before"],
                    "after": report["after"],
                    "retrieval_gain": report["after"]["retrieval_accuracy"] - report["before"]["retrieval_accuracy"],
                    "best_retrieval_accuracy": max(
                        [report["before"]["retrieval_accuracy"]]
                        + [r["retrieval_accuracy"] for r in report["history"] if "retrieval_accuracy" in r]
                    ),
                    "seconds": time.perf_counter() - began,
                }
            )
        after, before = rows[-1]["after"], rows[-1]["before"]
        print(
            f"{name:>24}: retrieval top-1 {before['retrieval_accuracy']:.3f} -> {after['retrieval_accuracy']:.3f}, "
            f"masked-LM accuracy (held-out) {after['eval_masked_lm_accuracy']:.3f} "
            f"({after.get('held_out_masked_lm_accuracy', float('nan')):.3f}) ({rows[-1]['seconds']:.0f} s)",
            flush=True,
        )
        # Written after every variant, so that an interrupted run keeps what it measured.
        write_results(args.output, _result(base, report, rows))


def _result(base: DemoArguments, report: dict, rows: list[dict]) -> dict:
    default = next((row for row in rows if row["variant"] == "default"), None)
    for row in rows:
        if default is not None and default["retrieval_gain"] > 0:
            row["retrieval_gain_vs_default"] = row["retrieval_gain"] / default["retrieval_gain"]
    return {
        "machine": machine_info(),
        "command": command_line(),
        "settings": {k: v for k, v in asdict(base).items() if k not in ("output_dir", "show_progress")},
        "chance_retrieval_accuracy": report["chance_retrieval_accuracy"],
        "variants": rows,
    }


if __name__ == "__main__":
    main()
