"""The paper's pre-training ablations in miniature, on the embedded synthetic corpus (`realm-hf pretrain`'s job).

Each variant runs the demo pipeline (reading warm start of the encoder on other worlds, weak ICT warm start of the
retriever, then REALM pre-training) with one setting changed, from the same seed, and reports top-1 retrieval of the
evidence document and masked-LM accuracy on the masked facts (training and held-out sentences), before and after
pre-training, and the retrieval gain `after - before`:

* `default`: the demo's defaults (index refreshed every step, salient-span masking, null document);
* `stale_index`: the index built after the warm starts is never refreshed (searched as by default: with the query
  tower's snapshot since that became the default, with the live query tower before);
* `refresh_5`, `refresh_20`, `refresh_100`: the index refreshed every 5 / 20 / 100 steps;
* `random_token`: random-token masking instead of salient spans (BERT's 15%);
* `random_span`: random spans (SpanBERT-style) instead of salient spans;
* `no_null_document`: no null document among the candidates;
* `no_warm_start`: no ICT warm start (random initialisation of the retriever);
* `no_reading_warm_start`: the encoder starts from random weights;
* `reading_in_invented_places`: the reading worlds invent their own places, so the encoder has never seen the target
  world's city names (the recipe before the reading worlds were set in the target world's places);
* `frozen_retriever`: the embedders do not train (learning rate 0): what the warm starts alone give;
* `retriever_at_encoder_lr`: the embedders train at the encoder's learning rate;
* `stale_live`, `stale_query_side`, `stale_snapshot`, `stale_rerank`: the index is never refreshed, and the live
  query tower searches it, or the retriever trains the query side only (document tower frozen), or searches with the
  query-tower snapshot of the index, or re-ranks 64 over-retrieved blocks with the live towers;
  `refresh_{20,100}_{live,snapshot,rerank}`: the same searches with a refresh (query-side training needs none).

With a stale index, retrieval is reported twice: through the index in service as training sees it
(`retrieval_accuracy`), and against the corpus re-embedded by the final document tower, searched by the live query
tower (`learned_retrieval_accuracy`: what the towers learned; the same number where the index is current).

With `--seeds`, every variant runs once per seed (worlds, model, data order and masking all change with it). Variants
that keep the default reading warm start reuse the one the first of them trained for that seed (`reader_from`: the
same weights, saved once, so the comparison is unchanged and the run shorter).

Usage:

    python benchmarks/ablate_pretraining.py --output benchmarks/results/ablate_pretraining.json
    python benchmarks/ablate_pretraining.py --variants default stale_index --max_steps 100   # quicker
    python benchmarks/ablate_pretraining.py --variants default frozen_retriever --seeds 0 1 2 --output seeds.json

Variants can run in separate processes (for example two one-thread processes side by side on two cores) and be
merged into one result, which checks that they ran with the same settings:

    python benchmarks/ablate_pretraining.py --merge first.json second.json --output ablate_pretraining.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from _common import Stopwatch, command_line, machine_info, write_results

from realm_hf.demo.job import READER_DIR, DemoArguments, run_demo


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
    "reading_in_invented_places": {"reading_in_target_places": False},
    "frozen_retriever": {"retriever_learning_rate": 0.0},
    "retriever_at_encoder_lr": {"retriever_learning_rate": None},
    # Strategies for a stale index, crossed with the refresh period (`stale_*`: never refreshed).
    "stale_live": {"index_refresh_steps": 0, "index_search": "live"},
    "stale_query_side": {"index_refresh_steps": 0, "retriever_training": "query_side"},
    "stale_snapshot": {"index_refresh_steps": 0, "index_search": "snapshot"},
    "stale_rerank": {"index_refresh_steps": 0, "rerank_candidates": 64},
    "refresh_20_live": {"index_refresh_steps": 20, "index_search": "live"},
    "refresh_100_live": {"index_refresh_steps": 100, "index_search": "live"},
    "refresh_20_snapshot": {"index_refresh_steps": 20, "index_search": "snapshot"},
    "refresh_100_snapshot": {"index_refresh_steps": 100, "index_search": "snapshot"},
    "refresh_20_rerank": {"index_refresh_steps": 20, "rerank_candidates": 64},
    "refresh_100_rerank": {"index_refresh_steps": 100, "rerank_candidates": 64},
}
# Variants that change the reading warm start (or the world it is trained for) cannot reuse the default's.
_OWN_READER = {"no_reading_warm_start", "reading_in_invented_places"}


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
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="Random seeds; every variant runs once per seed."
    )
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None,
        help="Merge the JSON results of earlier runs (same settings) into --output instead of running anything.",
    )  # fmt: skip
    args = parser.parse_args()
    if args.merge:
        result = merge_results([json.loads(path.read_text()) for path in args.merge])
        write_results(args.output, result)
        print(markdown_table(result))
        return

    base = DemoArguments(
        max_steps=args.max_steps,
        ict_steps=args.ict_steps,
        reading_steps=args.reading_steps,
        num_people=args.num_people,
        num_cities=args.num_cities,
        index_refresh_steps=args.index_refresh_steps,
        disable_tqdm=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as readers:
        for seed in args.seeds:
            shared_reader = None
            for name in args.variants:
                reader_from = None if name in _OWN_READER else shared_reader
                with tempfile.TemporaryDirectory() as workdir:
                    variant = replace(base, output_dir=workdir, seed=seed, reader_from=reader_from, **VARIANTS[name])
                    clock = Stopwatch.started()
                    report = run_demo(variant)
                    if reader_from is None and name not in _OWN_READER and variant.reading_steps:
                        shared_reader = str(Path(readers) / f"seed-{seed}")
                        shutil.copytree(Path(workdir) / READER_DIR, shared_reader)
                rows.append(_row(name, seed, report, clock.elapsed, reused_reader=reader_from is not None))
                after, before = rows[-1]["after"], rows[-1]["before"]
                print(
                    f"{name:>26} seed {seed}: retrieval top-1 {before['retrieval_accuracy']:.3f} -> "
                    f"{after['retrieval_accuracy']:.3f} (learned {rows[-1]['learned_retrieval_accuracy']:.3f}), masked-LM accuracy (held-out) "
                    f"{after['eval_masked_lm_accuracy']:.3f} ({after.get('held_out_masked_lm_accuracy', float('nan')):.3f}) "
                    f"({rows[-1]['seconds']:.0f} s)",
                    flush=True,
                )
                # Written after every run, so that an interrupted ablation keeps what it measured.
                write_results(args.output, _result(base, args.seeds, report, rows))
    print(markdown_table(_result(base, args.seeds, report, rows)))


def _row(name: str, seed: int, report: dict, seconds: float, reused_reader: bool) -> dict:
    return {
        "variant": name,
        "seed": seed,
        "changed": VARIANTS[name],
        "random_init": report["random_init"],
        "before": report["before"],
        "after": report["after"],
        "retrieval_gain": report["after"]["retrieval_accuracy"] - report["before"]["retrieval_accuracy"],
        "learned_retrieval_accuracy": _learned(report["after"], "retrieval_accuracy"),
        "learned_held_out_retrieval_accuracy": _learned(report["after"], "held_out_retrieval_accuracy"),
        "best_retrieval_accuracy": max(
            [report["before"]["retrieval_accuracy"]]
            + [r["retrieval_accuracy"] for r in report["history"] if "retrieval_accuracy" in r]
        ),
        "reused_reading_warm_start": reused_reader,
        "seconds": seconds,
    }


def _learned(metrics: dict, key: str) -> float:
    """`key` against an index re-embedded by the current towers (the index in service's where that is current)."""
    return metrics.get(f"fresh_index_{key}", metrics[key])


def _result(base: DemoArguments, seeds: list[int], report: dict, rows: list[dict]) -> dict:
    _add_gain_ratios(rows)
    return {
        "machine": machine_info(),
        "command": command_line(),
        "seeds": seeds,
        "settings": recipe_settings(base),
        "chance_retrieval_accuracy": report["chance_retrieval_accuracy"],
        "variants": rows,
    }


#: The recipe a result records (the names results have always used: `batch_size` is per_device_train_batch_size).
RECIPE_SETTINGS = ("max_steps", "batch_size", "learning_rate", "retriever_learning_rate", "reading_steps",
                   "reading_learning_rate", "reading_in_target_places", "ict_learning_rate", "num_people", "num_cities",
                   "held_out_fraction", "ict_steps", "index_refresh_steps", "index_refresh_mode", "retriever_training",
                   "index_search", "rerank_candidates", "masking", "use_null_document", "hidden_size",
                   "num_hidden_layers", "num_candidates", "eval_steps", "num_eval_facts", "reader_from", "push_to_hub",
                   "hub_model_id")  # fmt: skip


def recipe_settings(args: DemoArguments) -> dict:
    """The settings of the demo recipe `args` describes, comparable across runs of this script (`--merge`)."""
    renamed = {"batch_size": "per_device_train_batch_size"}
    return {key: getattr(args, renamed.get(key, key)) for key in RECIPE_SETTINGS}


def _add_gain_ratios(rows: list[dict]) -> None:
    """`retrieval_gain_vs_default` of every row against the `default` row of the same seed, where there is one."""
    defaults = {row["seed"]: row for row in rows if row["variant"] == "default"}
    for row in rows:
        default = defaults.get(row["seed"])
        if default is not None and default["retrieval_gain"] > 0:
            row["retrieval_gain_vs_default"] = row["retrieval_gain"] / default["retrieval_gain"]


def merge_results(results: list[dict]) -> dict:
    """One result from the results of several runs of this script with the same settings."""
    first = results[0]
    for other in results[1:]:
        if other["settings"] != first["settings"]:
            keys = set(first["settings"]) | set(other["settings"])
            changed = sorted(
                k for k in keys if first["settings"].get(k, "<absent>") != other["settings"].get(k, "<absent>")
            )
            raise SystemExit(f"Cannot merge runs with different settings (differing: {', '.join(changed)}).")
    rows, seen = [], set()
    for result in results:
        for row in result["variants"]:
            key = (row["variant"], row["seed"])
            if key in seen:
                raise SystemExit(f"Variant {key[0]!r} with seed {key[1]} is in more than one of the merged results.")
            seen.add(key)
            rows.append(row)
    _add_gain_ratios(rows)
    return {
        "machine": first["machine"],
        "commands": [command for result in results for command in result.get("commands") or [result["command"]]],
        "seeds": sorted({row["seed"] for row in rows}),
        "settings": first["settings"],
        "chance_retrieval_accuracy": first["chance_retrieval_accuracy"],
        "variants": rows,
    }


def markdown_table(result: dict) -> str:
    """The table of the README: one line per variant and seed."""

    def pct(value: float) -> str:
        return f"{100 * value:.1f}%"

    lines = [
        "| variant | seed | top-1 retrieval before -> after (learned) | gain vs default | held-out retrieval after "
        "(learned) | masked-LM after (held-out) | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["variants"]:
        before, after = row["before"], row["after"]
        ratio = row.get("retrieval_gain_vs_default")
        lines.append(
            f"| `{row['variant']}` | {row['seed']} | {pct(before['retrieval_accuracy'])} -> "
            f"{pct(after['retrieval_accuracy'])} ({pct(_learned(after, 'retrieval_accuracy'))}) | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | {pct(after['held_out_retrieval_accuracy'])} "
            f"({pct(_learned(after, 'held_out_retrieval_accuracy'))}) | {pct(after['eval_masked_lm_accuracy'])} "
            f"({pct(after['held_out_masked_lm_accuracy'])}) | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
