"""Open-QA inference throughput: batched `realm_hf.answer_questions` vs the original transformers REALM, one question
at a time, same weights, corpus and questions, same answers.

* reference (transformers 4.46.3, in its own virtualenv given by `--reference-python` or `REALM_REFERENCE_PYTHON`):
  `RealmForOpenQA` in eval mode under `torch.no_grad()`, batch size 1 (the only size it takes): tokenize the question,
  `einsum` + `topk` over the `block_emb` buffer, decode the `reader_beam_size` retrieved block records and
  re-tokenize them with the question, read, decode the answer;
* realm_hf: `answer_questions(model, tokenizer, questions, batch_size=...)` over a `RealmIndex` (FAISS exact search)
  of the same corpus, at batch size 1 and at each `--batch-sizes` value; it also returns each answer's score and
  evidence block.

Corpus, questions, weights and block embeddings are shared with `bench_finetune_step.py` (see `_openqa.py`).
Every timed run answers the same `--num-questions` SQuAD-open dev questions; the answers of every realm_hf run are
compared with the reference's, string for string, and the benchmark stops if they differ.

Timing: `--rounds` rounds, each starting a fresh process per configuration (order alternating); a process answers
`--warmup-questions` questions untimed, then all `--num-questions` in one timed call; a configuration's rate is its
best round.

`--device cuda` puts both models on a GPU (each side's tokenization and, for the reference, its block decoding
stay on the CPU, as in their own code); the timed call ends by decoding the answers, which waits for the device.

Usage:

    python benchmarks/bench_eval_throughput.py --reference-python ../realm-ref-venv/bin/python --threads 1 \\
        --output benchmarks/results/bench_eval_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from _common import (
    add_reference_arguments,
    alternating_rounds,
    best_of,
    best_round,
    command_line,
    machine_info,
    make_workdir,
    peak_rss_gib,
    reference_replacements,
    require_reference_python,
    run_worker,
    set_threads,
    write_results,
)
from _openqa import RealmHfOpenQA, ReferenceOpenQA, add_openqa_arguments, init_reference_weights, prepare_workdir


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reference_arguments(parser, threads_default=1)
    add_openqa_arguments(parser, searcher_beam_size=5000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16], help="realm_hf batch sizes (and 1)")
    parser.add_argument("--num-questions", type=int, default=128)
    parser.add_argument("--warmup-questions", type=int, default=4)
    parser.add_argument("--device", type=str, default="cpu", help="torch device of both models, e.g. cuda")
    # Internal: worker processes.
    parser.add_argument("--worker", choices=["init", "reference", "realm_hf"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-batch-size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=str, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------------------------------


def answer_all(side, examples: list[dict], batch_size: int) -> list[str]:
    """The predicted answer of every question: one at a time (reference) or batched (`answer_questions`)."""
    if side.name == "reference":
        with torch.no_grad():
            return side.answers(examples)
    from realm_hf import answer_questions

    answers = answer_questions(side.model, side.tokenizer, [e["question"] for e in examples], batch_size=batch_size)
    return [a.answer for a in answers]


def worker(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    result: dict = {"threads": set_threads(args.threads), "torch": torch.__version__}
    if args.worker == "init":
        result.update(init_reference_weights(workdir, args.seed))
    else:
        import transformers

        result["transformers"] = transformers.__version__
        questions = json.loads((workdir / "questions.json").read_text())
        timed = questions[args.warmup_questions : args.warmup_questions + args.num_questions]
        side = ReferenceOpenQA(workdir, 0.0) if args.worker == "reference" else RealmHfOpenQA(workdir, 0.0)
        side.model.to(args.device).eval()
        result["device"] = str(side.model.device)
        result["unexpected_keys"] = side.unexpected
        result["attn_implementation"] = side.attn_implementation
        answer_all(side, questions[: args.warmup_questions], args.worker_batch_size)
        result["answers"], result["seconds"] = best_of(lambda: answer_all(side, timed, args.worker_batch_size), 1)
        result["num_questions"] = len(timed)
        result["batch_size"] = args.worker_batch_size
    result["peak_rss_gib"] = peak_rss_gib()
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    reference_python = require_reference_python(args)
    info = machine_info()
    print(f"Machine: {info}", flush=True)
    workdir, temporary = make_workdir(args, "bench_eval_throughput-")
    script = Path(__file__)
    sides = {"reference": (reference_python, 1)}
    for size in sorted({1, *args.batch_sizes}):
        sides[f"realm_hf_b{size}"] = (sys.executable, size)
    try:
        data = prepare_workdir(args, workdir, args.warmup_questions + args.num_questions)
        print(
            f"Corpus and questions: {json.dumps({k: v for k, v in data.items() if k != 'model_config'})}", flush=True
        )

        def call(side: str, tag: str) -> dict:
            python, size = sides.get(side, (reference_python, 1))
            kind = side if side in ("init", "reference") else "realm_hf"
            result = workdir / f"result-{tag}.json"
            worker_args = ["--worker", kind, "--workdir", str(workdir), "--worker-batch-size", str(size)]
            worker_args += ["--num-questions", str(args.num_questions), "--seed", str(args.seed)]
            worker_args += ["--warmup-questions", str(args.warmup_questions), "--result", str(result)]
            worker_args += ["--device", args.device]
            if args.threads:
                worker_args += ["--threads", str(args.threads)]
            return run_worker(python, script, worker_args, result, native_threads=args.threads)

        init = call("init", "init")
        print(f"Reference weights initialised ({init['num_parameters']:,} parameters)", flush=True)

        def run(side: str, round_index: int) -> dict:
            return call(side, f"{side}-{round_index}")

        def report(round_index: int, results: dict) -> None:
            text = ", ".join(f"{s} {r['num_questions'] / r['seconds']:.2f} q/s" for s, r in results.items())
            print(f"round {round_index}: {text}, load {os.getloadavg()[0]:.2f}", flush=True)

        timings = alternating_rounds(args.rounds, list(sides), run, report)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)

    reference_answers = timings["reference"][0]["answers"]
    agreement = {}
    for side, rounds in timings.items():
        mismatches = [i for r in rounds for i, (a, b) in enumerate(zip(r["answers"], reference_answers)) if a != b]
        agreement[side] = {
            "identical_answers": len(reference_answers) - len(set(mismatches)),
            "mismatched": sorted(set(mismatches)),
        }
    same = all(not v["mismatched"] for v in agreement.values())
    summary = {}
    for side, rounds in timings.items():
        stats = best_round([[r["seconds"] / r["num_questions"]] for r in rounds])
        summary[side] = {
            "batch_size": rounds[0]["batch_size"],
            "round_seconds_per_question": stats["round_medians"],
            "best_seconds_per_question": stats["best"],
            "questions_per_s": 1.0 / stats["best"],
            "peak_rss_gib": max(r["peak_rss_gib"] for r in rounds),
            "attn_implementation": rounds[0]["attn_implementation"],
            "device": rounds[0]["device"],
        }
    reference_rate = summary["reference"]["questions_per_s"]
    speedups = {side: s["questions_per_s"] / reference_rate for side, s in summary.items() if side != "reference"}
    per_round = {
        side: [ref["seconds"] / r["seconds"] for ref, r in zip(timings["reference"], timings[side])]
        for side in speedups
    }
    info["load_average_at_end"] = list(os.getloadavg())
    for rounds in timings.values():
        for r in rounds:
            r["answers"] = r["answers"][:8]  # a sample; the full comparison is in `agreement`
    answered = sum(bool(a) for a in reference_answers)
    results = {
        "command": command_line(),
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "result", "worker_batch_size")},
        "data": data,
        "machine": info,
        "versions": {
            "reference": init["transformers"],
            "realm_hf_transformers": timings[list(sides)[1]][0]["transformers"],
        },
        "agreement": {"same_answers": same, "non_empty_reference_answers": answered, "per_configuration": agreement},
        "summary": summary,
        "speedup_questions_per_s": speedups,
        "per_round_speedup": per_round,
        "timing_rounds": timings,
        "goals": {"speedup_best": max(speedups.values()), "goal_3x_met": max(speedups.values()) >= 3.0},
    }
    print_table(results)
    if not same:
        print("WARNING: the answers differ between the implementations (see agreement).", flush=True)
    return write_results(
        args.output, results, reference_replacements(reference_python, data=args.data_dir, workdir=workdir)
    )


def print_table(results: dict) -> None:
    config, data = results["config"], results["data"]
    model = data["model_config"]
    print(
        f"\n### Open-QA inference: preset {config['preset']} (hidden {model['hidden_size']}, "
        f"{model['num_hidden_layers']} layers), reader beam {model['reader_beam_size']}, reader length "
        f"{model['reader_seq_len']}, {data['num_blocks']:,} blocks, {config['num_questions']} questions, "
        f"{config['threads']} thread(s)\n"
    )
    print("| implementation | batch | questions/s | speed-up | peak RSS (GiB) |")
    print("|---|---:|---:|---:|---:|")
    for side, s in results["summary"].items():
        name = (
            f"transformers {results['versions']['reference']} RealmForOpenQA"
            if side == "reference"
            else f"realm_hf answer_questions ({s['attn_implementation']})"
        )
        speedup = results["speedup_questions_per_s"].get(side, 1.0)
        print(
            f"| {name} | {s['batch_size']} | {s['questions_per_s']:.2f} | {speedup:.2f}x | {s['peak_rss_gib']:.2f} |"
        )
    print(
        f"\nSame answers: {results['agreement']['same_answers']}; per-round speed-ups {json.dumps(results['per_round_speedup'])}"
    )
    print(f"Goals: {json.dumps(results['goals'])}")


if __name__ == "__main__":
    main()
