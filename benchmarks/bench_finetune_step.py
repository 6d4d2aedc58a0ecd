"""Open-QA fine-tuning step throughput: `realm_hf.RealmForOpenQA` vs the original transformers REALM, same weights.

One training step of `RealmForOpenQA` at `searcher_beam_size` 5,000 (the paper's fine-tuning beam): embed the
question, retrieve the top 5,000 blocks, build the reader inputs of the top `reader_beam_size` (5) and the answer
labels of all 5,000 (the retriever's marginal loss is over the whole beam), run the reader, `loss.backward()`,
`AdamW.step()`.

* reference (transformers 4.46.3, in its own virtualenv given by `--reference-python` or `REALM_REFERENCE_PYTHON`):
  batch size 1 only. Its `RealmRetriever` decodes the 5,000 retrieved block records back to text, re-tokenizes them
  with the question at every step and looks for the answers token by token in Python; search is a dense
  `einsum` + `topk` over the `block_emb` buffer;
* realm_hf: the same model over a `RealmIndex` (FAISS exact search) whose corpus stores the block token ids, at batch
  size 1 and at `--batch-size` (default 8), with the package's `DataCollatorForRealmOpenQA`.

Both steps include tokenizing the question(s) and answers. Corpus, questions, weights and block embeddings are shared
(see `_openqa.py`): SQuAD-open passages as 288-wordpiece blocks (>= 5,000 distinct blocks so that the beam is full),
SQuAD-open dev questions, a model of `--preset` size initialised by the reference process (seed `--seed`).

Agreement, checked before timing (train mode so that the 5,000-block beam is used, dropout 0): for the first
`--check-questions` questions one at a time, the retrieved block ids (all 5,000, in order), the answer labels of the
5,000 blocks, the predicted block and the losses; then the realm_hf batched loss on those questions against the mean of
the reference losses, and the loss after one AdamW step on the first question.

Timing (train mode, dropout `--dropout`): `--rounds` rounds, each starting a fresh process per configuration (order
alternating), `--warmup` untimed steps then `--steps` timed steps on consecutive questions; a configuration's rate is
its best round's median step. Questions per second = batch size / step time.

Usage:

    python benchmarks/bench_finetune_step.py --reference-python ../realm-ref-venv/bin/python --threads 1 \\
        --output benchmarks/results/bench_finetune_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import torch
from _common import (
    Stopwatch,
    add_reference_arguments,
    alternating_rounds,
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
from _openqa import (
    RealmHfOpenQA,
    ReferenceOpenQA,
    add_openqa_arguments,
    init_reference_weights,
    prepare_workdir,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reference_arguments(parser, threads_default=1)
    add_openqa_arguments(parser, searcher_beam_size=5000)
    parser.add_argument("--batch-size", type=int, default=8, help="realm_hf's larger batch (also timed at 1)")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--check-questions", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest loss difference accepted")
    # Internal: worker processes.
    parser.add_argument("--worker", choices=["init", "reference", "realm_hf"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=["check", "time"], default="time", help=argparse.SUPPRESS)
    parser.add_argument("--worker-batch-size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=str, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------------------------------


def make_side(kind: str, workdir: Path, dropout: float, record: bool = False):
    if kind == "reference":
        return ReferenceOpenQA(workdir, dropout, record=record)
    return RealmHfOpenQA(workdir, dropout)


def train_step(side, optimizer, examples: list[dict]) -> dict[str, float]:
    """Forward (tokenization, retrieval, reader inputs, labels, reader), backward and AdamW step."""
    with Stopwatch() as forward:
        loss = side.forward(examples).reader_output.loss
    with Stopwatch() as backward:
        loss.backward()
    with Stopwatch() as step:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = {"forward": forward.seconds, "backward": backward.seconds, "optimizer": step.seconds}
    return {"loss": loss.item(), **seconds, "total": sum(seconds.values())}


def check(side, questions: list[dict], count: int, lr: float) -> dict:
    """Train mode without dropout: per-question retrieval, labels and losses; a batched loss; one AdamW step."""
    side.model.train()
    per_question = []
    for example in questions[:count]:
        with torch.no_grad():
            out = side.forward([example])
        reader = out.reader_output
        if side.name == "reference":
            ids, has_answers = side.retriever.last["retrieved_block_ids"], side.retriever.last["has_answers"]
        else:
            ids, has_answers = out.retrieved_block_ids[0].tolist(), reader.retriever_correct.tolist()
        per_question.append(
            {
                "retrieved_block_ids": ids,
                "has_answers": [bool(x) for x in has_answers],
                "block_idx": int(reader.block_idx),
                "predicted_answer_ids": [int(x) for x in out.predicted_answer_ids],
                "loss": reader.loss.item(),
                "retriever_loss": float(reader.retriever_loss),
                "reader_loss": float(reader.reader_loss),
            }
        )
    result = {"per_question": per_question}
    if side.name == "realm_hf":
        with torch.no_grad():
            result["batched_loss"] = side.forward(questions[:count]).reader_output.loss.item()
    optimizer = torch.optim.AdamW([p for p in side.model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    train_step(side, optimizer, questions[:1])
    with torch.no_grad():
        result["loss_after_one_step"] = side.forward(questions[:1]).reader_output.loss.item()
    return result


def worker(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    result: dict = {"threads": set_threads(args.threads), "torch": torch.__version__}
    if args.worker == "init":
        result.update(init_reference_weights(workdir, args.seed))
    else:
        import transformers

        result["transformers"] = transformers.__version__
        questions = json.loads((workdir / "questions.json").read_text())
        is_check = args.task == "check"
        side = make_side(args.worker, workdir, 0.0 if is_check else args.dropout, record=is_check)
        result["unexpected_keys"] = side.unexpected
        result["attn_implementation"] = side.attn_implementation
        if is_check:
            result.update(check(side, questions, args.check_questions, args.lr))
        else:
            side.model.train()
            params = [p for p in side.model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
            size = args.worker_batch_size
            needed = (args.warmup + args.steps) * size
            if needed > len(questions):
                raise RuntimeError(f"{needed} questions needed, {len(questions)} prepared.")
            batches = [questions[i * size : (i + 1) * size] for i in range(args.warmup + args.steps)]
            for batch in batches[: args.warmup]:
                train_step(side, optimizer, batch)
            result["steps"] = [train_step(side, optimizer, batch) for batch in batches[args.warmup :]]
            result["batch_size"] = size
    result["peak_rss_gib"] = peak_rss_gib()
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------------


def worker_arguments(args: argparse.Namespace, workdir: Path, kind: str, task: str, batch_size: int = 1) -> list[str]:
    out = ["--worker", kind, "--task", task, "--workdir", str(workdir), "--worker-batch-size", str(batch_size)]
    out += ["--dropout", str(args.dropout), "--seed", str(args.seed), "--lr", str(args.lr)]
    out += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--check-questions", str(args.check_questions)]
    if args.threads:
        out += ["--threads", str(args.threads)]
    return out


def compare(reference: dict, ours: dict, tolerance: float) -> dict:
    """Agreement of the check results of both sides."""
    rows = []
    for ref_q, our_q in zip(reference["per_question"], ours["per_question"]):
        ref_ids, our_ids = ref_q["retrieved_block_ids"], our_q["retrieved_block_ids"]
        rows.append(
            {
                "retrieved_ids_identical": ref_ids == our_ids,
                "retrieved_positions_differing": sum(a != b for a, b in zip(ref_ids, our_ids)),
                "retrieved_sets_identical": set(ref_ids) == set(our_ids),
                "num_retrieved": len(our_ids),
                "has_answers_identical": ref_q["has_answers"] == our_q["has_answers"],
                "blocks_with_answer": sum(our_q["has_answers"]),
                "same_predicted_block_and_answer": ref_q["block_idx"] == our_q["block_idx"]
                and ref_q["predicted_answer_ids"] == our_q["predicted_answer_ids"],
                "loss_reference": ref_q["loss"],
                "loss_realm_hf": our_q["loss"],
                "loss_abs_diff": abs(ref_q["loss"] - our_q["loss"]),
                "retriever_loss_abs_diff": abs(ref_q["retriever_loss"] - our_q["retriever_loss"]),
                "reader_loss_abs_diff": abs(ref_q["reader_loss"] - our_q["reader_loss"]),
            }
        )
    mean_reference = statistics.fmean(q["loss"] for q in reference["per_question"])
    agreement = {
        "per_question": rows,
        "batched_loss_realm_hf": ours["batched_loss"],
        "mean_loss_reference": mean_reference,
        "batched_loss_abs_diff": abs(ours["batched_loss"] - mean_reference),
        "loss_after_one_step_reference": reference["loss_after_one_step"],
        "loss_after_one_step_realm_hf": ours["loss_after_one_step"],
        "loss_after_one_step_abs_diff": abs(reference["loss_after_one_step"] - ours["loss_after_one_step"]),
        "unexpected_keys": {"reference": reference["unexpected_keys"], "realm_hf": ours["unexpected_keys"]},
    }
    worst = max(
        [r["loss_abs_diff"] for r in rows]
        + [agreement["batched_loss_abs_diff"], agreement["loss_after_one_step_abs_diff"]]
    )
    agreement["max_loss_abs_diff"] = worst
    agreement["same_computation"] = bool(
        worst <= tolerance
        and all(r["retrieved_sets_identical"] and r["has_answers_identical"] for r in rows)
        and all(r["same_predicted_block_and_answer"] for r in rows)
    )
    return agreement


def summarise(rounds: list[dict]) -> dict:
    stats = best_round([[s["total"] for s in r["steps"]] for r in rounds])
    size = rounds[0]["batch_size"]
    steps = rounds[stats["best_round"]]["steps"]
    return {
        "batch_size": size,
        "round_median_step_seconds": stats["round_medians"],
        "best_step_seconds": stats["best"],
        "steps_per_s": 1.0 / stats["best"],
        "questions_per_s": size / stats["best"],
        "best_round_phase_seconds": {
            phase: statistics.median(s[phase] for s in steps) for phase in ("forward", "backward", "optimizer")
        },
        "peak_rss_gib": max(r["peak_rss_gib"] for r in rounds),
        "attn_implementation": rounds[0]["attn_implementation"],
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    reference_python = require_reference_python(args)
    info = machine_info()
    print(f"Machine: {info}", flush=True)
    workdir, temporary = make_workdir(args, "bench_finetune_step-")
    script = Path(__file__)
    sides = {"reference": (reference_python, 1), "realm_hf_b1": (sys.executable, 1)}
    if args.batch_size > 1:
        sides[f"realm_hf_b{args.batch_size}"] = (sys.executable, args.batch_size)
    try:
        needed = max(args.check_questions, (args.warmup + args.steps) * max(args.batch_size, 1))
        data = prepare_workdir(args, workdir, needed)
        print(
            f"Corpus and questions: {json.dumps({k: v for k, v in data.items() if k != 'model_config'})}", flush=True
        )

        def call(python: str, kind: str, task: str, tag: str, batch_size: int = 1) -> dict:
            result = workdir / f"result-{tag}.json"
            worker_args = worker_arguments(args, workdir, kind, task, batch_size) + ["--result", str(result)]
            return run_worker(python, script, worker_args, result, native_threads=args.threads)

        init = call(reference_python, "init", "check", "init")
        print(f"Reference weights initialised ({init['num_parameters']:,} parameters)", flush=True)
        reference_check = call(reference_python, "reference", "check", "check-reference")
        ours_check = call(sys.executable, "realm_hf", "check", "check-realm_hf")
        agreement = compare(reference_check, ours_check, args.tolerance)
        print(f"Agreement: {json.dumps({k: v for k, v in agreement.items() if k != 'per_question'})}", flush=True)
        for row in agreement["per_question"]:
            print(f"  {json.dumps(row)}", flush=True)
        if not agreement["same_computation"]:
            raise SystemExit("The two implementations do not compute the same thing; not timing.")

        def run(side: str, round_index: int) -> dict:
            python, size = sides[side]
            kind = "reference" if side == "reference" else "realm_hf"
            return call(python, kind, "time", f"time-{side}-{round_index}", size)

        def report(round_index: int, results: dict) -> None:
            per_q = {
                s: statistics.median(x["total"] for x in r["steps"]) / r["batch_size"] for s, r in results.items()
            }
            text = ", ".join(f"{s} {t:.3f} s/question" for s, t in per_q.items())
            print(f"round {round_index}: {text}, load {os.getloadavg()[0]:.2f}", flush=True)

        timings = alternating_rounds(args.rounds, list(sides), run, report)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)

    summary = {side: summarise(rounds) for side, rounds in timings.items()}
    reference_rate = summary["reference"]["questions_per_s"]
    speedups = {side: s["questions_per_s"] / reference_rate for side, s in summary.items() if side != "reference"}
    per_round = {
        side: [
            statistics.median(x["total"] for x in ref["steps"])
            / (statistics.median(x["total"] for x in ours["steps"]) / ours["batch_size"])
            for ref, ours in zip(timings["reference"], timings[side])
        ]
        for side in speedups
    }
    info["load_average_at_end"] = list(os.getloadavg())
    results = {
        "command": command_line(),
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "task", "result", "worker_batch_size")},
        "data": data,
        "machine": info,
        "versions": {"reference": init["transformers"], "realm_hf_transformers": ours_check["transformers"]},
        "agreement": agreement,
        "summary": summary,
        "speedup_questions_per_s": speedups,
        "per_round_speedup": per_round,
        "timing_rounds": timings,
        "goals": {"speedup_best": max(speedups.values()), "goal_10x_met": max(speedups.values()) >= 10.0},
    }
    print_table(results)
    return write_results(
        args.output, results, reference_replacements(reference_python, data=args.data_dir, workdir=workdir)
    )


def print_table(results: dict) -> None:
    config, data = results["config"], results["data"]
    model = data["model_config"]
    print(
        f"\n### Open-QA fine-tuning step: preset {config['preset']} (hidden {model['hidden_size']}, "
        f"{model['num_hidden_layers']} layers), searcher beam {model['searcher_beam_size']}, reader beam "
        f"{model['reader_beam_size']}, reader length {model['reader_seq_len']}, {data['num_blocks']:,} blocks, "
        f"dropout {config['dropout']}, {config['threads']} thread(s)\n"
    )
    print(
        "| implementation | batch | s/step | questions/s | forward / backward / optimizer (s) | speed-up | peak RSS (GiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    names = {"reference": f"transformers {results['versions']['reference']} RealmForOpenQA"}
    for side, s in results["summary"].items():
        name = names.get(side, f"realm_hf RealmForOpenQA ({s['attn_implementation']})")
        phases = " / ".join(f"{s['best_round_phase_seconds'][p]:.3f}" for p in ("forward", "backward", "optimizer"))
        speedup = results["speedup_questions_per_s"].get(side, 1.0)
        print(
            f"| {name} | {s['batch_size']} | {s['best_step_seconds']:.3f} | {s['questions_per_s']:.2f} | {phases} | "
            f"{speedup:.1f}x | {s['peak_rss_gib']:.2f} |"
        )
    a = results["agreement"]
    print(
        f"\nAgreement (train mode, dropout 0): same computation {a['same_computation']}; max |loss difference| "
        f"{a['max_loss_abs_diff']:.2e}; per-round speed-ups {json.dumps(results['per_round_speedup'])}"
    )
    print(f"Goals: {json.dumps(results['goals'])}")


if __name__ == "__main__":
    main()
