"""The paper's pre-training ablations in miniature, on the embedded synthetic corpus (`realm-hf pretrain`'s job).

Each variant runs the demo pipeline (ICT warm start, then REALM pre-training) with one setting changed, from the same
seed, and reports top-1 retrieval of the evidence document and masked-LM accuracy on the masked facts, before and after
pre-training:

* `default`: index refreshed every `--index_refresh_steps` steps, salient-span masking, null document;
* `stale_index`: the index built after the warm start is never refreshed;
* `random_token`: random-token masking instead of salient spans (BERT's 15%);
* `no_null_document`: no null document among the candidates;
* `no_ict`: no ICT warm start (random initialisation of the retriever);
* `retriever_at_encoder_lr`: the embedders train at the encoder's learning rate instead of the (much lower) default
  retriever learning rate.

Usage:

    python benchmarks/ablate_pretraining.py --output benchmarks/results/ablate_pretraining.json
    python benchmarks/ablate_pretraining.py --variants default stale_index --max_steps 100   # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from realm_hf.demo import DemoArguments, run_demo


VARIANTS = {
    "default": {},
    "stale_index": {"index_refresh_steps": 0},
    "random_token": {"masking": "random_token"},
    "no_null_document": {"use_null_document": False},
    "no_ict": {"ict_steps": 0},
    "retriever_at_encoder_lr": {"retriever_learning_rate": None},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--max_steps", type=int, default=DemoArguments.max_steps)
    parser.add_argument("--ict_steps", type=int, default=DemoArguments.ict_steps)
    parser.add_argument("--num_people", type=int, default=DemoArguments.num_people)
    parser.add_argument("--num_cities", type=int, default=DemoArguments.num_cities)
    parser.add_argument("--index_refresh_steps", type=int, default=DemoArguments.index_refresh_steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()

    base = DemoArguments(
        max_steps=args.max_steps,
        ict_steps=args.ict_steps,
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
                    "best_retrieval_accuracy": max(
                        [report["before"]["retrieval_accuracy"]]
                        + [r["retrieval_accuracy"] for r in report["history"] if "retrieval_accuracy" in r]
                    ),
                    "seconds": time.perf_counter() - began,
                }
            )
        after = rows[-1]["after"]
        print(
            f"{name:>17}: retrieval top-1 {rows[-1]['before']['retrieval_accuracy']:.3f} -> "
            f"{after['retrieval_accuracy']:.3f}, masked-LM accuracy {rows[-1]['before']['eval_masked_lm_accuracy']:.3f}"
            f" -> {after['eval_masked_lm_accuracy']:.3f} ({rows[-1]['seconds']:.0f} s)",
            flush=True,
        )
    result = {
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__},
        "settings": {k: v for k, v in asdict(base).items() if k not in ("output_dir", "show_progress")},
        "chance_retrieval_accuracy": report["chance_retrieval_accuracy"],
        "variants": rows,
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
