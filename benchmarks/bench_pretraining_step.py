"""Pre-training step throughput: `realm_hf.RealmForPreTraining` vs the original transformers REALM, same batch.

The original (transformers 4.x `RealmScorer` + `RealmKnowledgeAugEncoder`) runs in a separate Python environment
given by `--reference-python` (or the `REALM_REFERENCE_PYTHON` environment variable), as a subprocess of this script.
One training step on both sides, on the same pre-retrieved batch and the same weights:

* reference: `RealmScorer(input_ids, candidate_input_ids=...)` -> `relevance_score`;
  `RealmKnowledgeAugEncoder(joint_input_ids, relevance_score=..., labels=..., mlm_mask=labels != -100)` -> loss
  (labels padded with -100 to the joint length, as that API requires; the mask makes the loss the mean over the
  masked tokens); `loss.backward()`; `AdamW.step()`;
* realm_hf: `RealmForPreTraining(input_ids, labels=..., candidate_input_ids=..., joint_input_ids=...)` -> loss;
  `loss.backward()`; `AdamW.step()`.

Weights: the reference process initialises a `RealmScorer` and a `RealmKnowledgeAugEncoder` with seed `--seed` and
saves their weights (`embedder.safetensors` = the scorer's shared embedder, `encoder.safetensors`); both sides load
them (realm_hf into `model.embedder` and `model.encoder`, strictly: no missing weight). The encoder's MLM decoder is
tied to its word embeddings on both sides; queries and candidates share the embedder on both sides.

Before timing, one step is run in eval mode (no dropout) on both sides: the losses before and after one AdamW step
and the gradient norms must agree (|loss difference| <= `--tolerance`, 1e-4 by default). Timing runs in train mode
(dropout `--dropout`, 0.1 by default on both sides): `--rounds` rounds, each starting a fresh process per side (the
order alternates between rounds), `--warmup` untimed steps then `--steps` timed steps; a side's steps/s is the best
round's median step time. Attention: the reference has only its eager implementation; realm_hf uses the transformers 5
BERT trunk with SDPA (the default).

Batch (random token ids, fixed seed): `--batch-size` queries of `--query-len` tokens (`[CLS] x [SEP]`, 15% of the
inner tokens replaced by `[MASK]` and labelled), `--num-candidates` candidates of `--block-len` tokens
(`[CLS] title [SEP] body [SEP]`) each, and joint inputs `[CLS] x [SEP] title [SEP] body [SEP]` (query first, so label
positions line up) padded to `query_len + block_len`.

Usage:

    python benchmarks/bench_pretraining_step.py --reference-python ../realm-ref-venv/bin/python \\
        --output benchmarks/results/bench_pretraining_step.json
    REALM_REFERENCE_PYTHON=/path/to/venv/bin/python python benchmarks/bench_pretraining_step.py --profile \\
        --hidden-size 128 --num-layers 2 --rounds 2 --output /tmp/step.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import _common
import torch
from _common import (
    Stopwatch,
    load_state_strict,
    machine_info,
    peak_rss_gib,
    reference_replacements,
    write_results,
)


REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "proj_size",
    "num_candidates",
    "query_len",
    "block_len",
    "batch_size",
    "mask_rate",
    "lr",
    "dropout",
    "seed",
    "threads",
)
PAD, CLS, SEP, MASK = 0, 101, 102, 103


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-python", type=str, default=os.environ.get("REALM_REFERENCE_PYTHON"))
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--intermediate-size", type=int, default=1024)
    parser.add_argument("--proj-size", type=int, default=128)
    parser.add_argument("--num-candidates", type=int, default=8)
    parser.add_argument("--query-len", type=int, default=64)
    parser.add_argument("--block-len", type=int, default=288)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--mask-rate", type=float, default=0.15)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout while timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in both processes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--profile", action="store_true", help="also profile one step of each side (torch.profiler)")
    parser.add_argument("--workdir", type=str, default=None, help="kept if given; a temporary directory otherwise")
    parser.add_argument("--output", type=str, default=None, help="JSON results file")
    # Internal: worker processes.
    parser.add_argument("--worker", choices=["init", "reference", "realm_hf"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=["init", "check", "time", "profile"], default="time", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--attn-implementation", type=str, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------------
# Batch
# ----------------------------------------------------------------------------------------------------------------


def make_batch(cfg: dict) -> dict[str, torch.Tensor]:
    """A pre-retrieved REALM pre-training batch of random wordpieces (ids >= 1000, so no special token)."""
    g = torch.Generator().manual_seed(cfg["seed"])
    b, k, lq, lb = cfg["batch_size"], cfg["num_candidates"], cfg["query_len"], cfg["block_len"]
    lj = lq + lb

    def words(*shape):
        return torch.randint(1000, cfg["vocab_size"], shape, generator=g)

    query = torch.cat([torch.full((b, 1), CLS), words(b, lq - 2), torch.full((b, 1), SEP)], dim=1)
    labels = torch.full_like(query, -100)
    num_masked = max(1, round(cfg["mask_rate"] * (lq - 2)))
    for row in range(b):
        positions = 1 + torch.randperm(lq - 2, generator=g)[:num_masked]
        labels[row, positions] = query[row, positions]
        query[row, positions] = MASK
    title_len = 8
    candidates = torch.cat(
        [
            torch.full((b, k, 1), CLS),
            words(b, k, title_len),
            torch.full((b, k, 1), SEP),
            words(b, k, lb - title_len - 3),
            torch.full((b, k, 1), SEP),
        ],
        dim=2,
    )
    candidate_types = torch.zeros_like(candidates)
    candidate_types[:, :, title_len + 2 :] = 1
    joint = torch.full((b, k, lj), PAD)
    joint[:, :, :lq] = query[:, None, :]
    joint[:, :, lq : lq + lb - 1] = candidates[:, :, 1:]
    joint_mask = (joint != PAD).long()
    joint_types = torch.zeros_like(joint)
    joint_types[:, :, lq:] = 1
    return {
        "input_ids": query,
        "attention_mask": torch.ones_like(query),
        "token_type_ids": torch.zeros_like(query),
        "labels": labels,
        "candidate_input_ids": candidates,
        "candidate_attention_mask": torch.ones_like(candidates),
        "candidate_token_type_ids": candidate_types,
        "joint_input_ids": joint,
        "joint_attention_mask": joint_mask,
        "joint_token_type_ids": joint_types * joint_mask,
    }


# ----------------------------------------------------------------------------------------------------------------
# Workers (run as subprocesses; the reference ones in the reference environment, which has no realm_hf)
# ----------------------------------------------------------------------------------------------------------------


def config_kwargs(cfg: dict, dropout: float) -> dict:
    """The `RealmConfig` arguments of the benchmarked model, the same for both implementations."""
    return {
        "vocab_size": cfg["vocab_size"],
        "hidden_size": cfg["hidden_size"],
        "num_hidden_layers": cfg["num_layers"],
        "num_attention_heads": cfg["num_heads"],
        "intermediate_size": cfg["intermediate_size"],
        "retriever_proj_size": cfg["proj_size"],
        "num_candidates": cfg["num_candidates"],
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
        "pad_token_id": PAD,
    }


def reference_models(cfg: dict, dropout: float):
    try:
        from transformers.models.deprecated.realm import (
            RealmConfig,
            RealmKnowledgeAugEncoder,
            RealmScorer,
        )
    except ImportError:  # transformers < 4.40 kept REALM outside `deprecated`
        from transformers import RealmConfig, RealmKnowledgeAugEncoder, RealmScorer
    config = RealmConfig(**config_kwargs(cfg, dropout))
    return RealmScorer(config), RealmKnowledgeAugEncoder(config)


def realm_hf_model(cfg: dict, dropout: float):
    from realm_hf import RealmConfig
    from realm_hf.modeling_realm import RealmForPreTraining

    config = RealmConfig(**config_kwargs(cfg, dropout))
    return RealmForPreTraining(config)


def load_strict(module: torch.nn.Module, path: Path) -> list[str]:
    """Loads a safetensors file into `module`; fails on a missing weight; returns the unexpected keys."""
    from safetensors.torch import load_file

    return load_state_strict(module, load_file(str(path)))


class Side:
    """One implementation: `loss()` runs the forward of a training step; `parameters` feed the optimizer."""

    def __init__(self, kind: str, cfg: dict, workdir: Path, dropout: float, attn_implementation: str | None = None):
        from safetensors.torch import load_file

        self.kind = kind
        self.batch = load_file(str(workdir / "batch.safetensors"))
        if kind == "reference":
            self.scorer, self.encoder = reference_models(cfg, dropout)
            self.unexpected = load_strict(self.scorer.embedder, workdir / "embedder.safetensors")
            self.unexpected += load_strict(self.encoder, workdir / "encoder.safetensors")
            assert self.scorer.query_embedder is self.scorer.embedder
            self.modules = [self.scorer, self.encoder]
            embedder, encoder = self.scorer.embedder, self.encoder
            labels = self.batch["labels"]
            joint_len = self.batch["joint_input_ids"].size(-1)
            padded = torch.full((labels.size(0), joint_len), -100, dtype=labels.dtype)
            padded[:, : labels.size(1)] = labels
            self.joint_labels, self.mlm_mask = padded, (padded != -100).float()
        else:
            self.model = realm_hf_model(cfg, dropout)
            if attn_implementation:
                self.model.set_attn_implementation(attn_implementation)
            self.unexpected = load_strict(self.model.embedder, workdir / "embedder.safetensors")
            self.unexpected += load_strict(self.model.encoder, workdir / "encoder.safetensors")
            self.modules = [self.model]
            embedder, encoder = self.model.embedder, self.model.encoder
            self.attn_implementation = self.model.config._attn_implementation
        tied = encoder.cls.predictions.decoder.weight is encoder.realm.embeddings.word_embeddings.weight
        if not tied:
            raise RuntimeError(f"{kind}: the encoder's MLM decoder is not tied to its word embeddings")
        self.groups = {"embedder": list(embedder.parameters()), "encoder": list(encoder.parameters())}
        seen, self.parameters = set(), []
        for params in self.groups.values():
            for p in params:
                if id(p) not in seen:
                    seen.add(id(p))
                    self.parameters.append(p)
        self.optimizer = torch.optim.AdamW(self.parameters, lr=cfg["lr"], weight_decay=0.01)

    def train(self, mode: bool) -> None:
        for module in self.modules:
            module.train(mode)

    def loss(self) -> torch.Tensor:
        b = self.batch
        if self.kind == "reference":
            relevance_score = self.scorer(
                input_ids=b["input_ids"],
                attention_mask=b["attention_mask"],
                token_type_ids=b["token_type_ids"],
                candidate_input_ids=b["candidate_input_ids"],
                candidate_attention_mask=b["candidate_attention_mask"],
                candidate_token_type_ids=b["candidate_token_type_ids"],
                return_dict=True,
            ).relevance_score
            return self.encoder(
                input_ids=b["joint_input_ids"],
                attention_mask=b["joint_attention_mask"],
                token_type_ids=b["joint_token_type_ids"],
                relevance_score=relevance_score,
                labels=self.joint_labels,
                mlm_mask=self.mlm_mask,
                return_dict=True,
            ).loss
        return self.model(**b, return_dict=True).loss

    def step(self) -> dict[str, float]:
        with Stopwatch() as forward:
            loss = self.loss()
        with Stopwatch() as backward:
            loss.backward()
        with Stopwatch() as step:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        seconds = {"forward": forward.seconds, "backward": backward.seconds, "optimizer": step.seconds}
        return {"loss": loss.item(), **seconds, "total": sum(seconds.values())}

    def named_grads(self) -> dict[str, torch.Tensor]:
        if self.kind == "reference":
            named = {"embedder": self.scorer.embedder, "encoder": self.encoder}
        else:
            named = {"embedder": self.model.embedder, "encoder": self.model.encoder}
        return {
            f"{prefix}.{name}": p.grad.detach().clone().contiguous()
            for prefix, module in named.items()
            for name, p in module.named_parameters()
            if p.grad is not None
        }

    def grad_norms(self) -> dict[str, float]:
        return {
            name: float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params if p.grad is not None)))
            for name, params in self.groups.items()
        }


def worker(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    cfg = json.loads((workdir / "config.json").read_text())
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    result: dict = {"python": sys.executable, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.worker == "init":
        from safetensors.torch import save_file
        from transformers import __version__

        torch.manual_seed(cfg["seed"])
        scorer, encoder = reference_models(cfg, cfg["dropout"])
        for module, name in ((scorer.embedder, "embedder"), (encoder, "encoder")):
            state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
            save_file(state, str(workdir / f"{name}.safetensors"))
        result.update(transformers=__version__, num_parameters=sum(p.numel() for p in scorer.parameters()))
    else:
        import transformers

        result["transformers"] = transformers.__version__
        check = args.task == "check"
        side = Side(args.worker, cfg, workdir, 0.0 if check else cfg["dropout"], args.attn_implementation)
        result["unexpected_keys"] = side.unexpected
        result["attn_implementation"] = getattr(side, "attn_implementation", "eager")
        result["num_trainable_parameters"] = sum(p.numel() for p in side.parameters)
        if check:
            side.train(False)  # no dropout: the two implementations must compute the same numbers
            loss = side.loss()
            loss.backward()
            result["loss_before"] = loss.item()
            result["grad_norms"] = side.grad_norms()
            from safetensors.torch import save_file

            save_file(side.named_grads(), str(Path(args.result).with_suffix(".grads.safetensors")))
            side.optimizer.step()
            side.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                result["loss_after_one_step"] = side.loss().item()
        elif args.task == "time":
            side.train(True)
            for _ in range(cfg["warmup"]):
                side.step()
            result["steps"] = [side.step() for _ in range(cfg["steps"])]
        else:
            side.train(True)
            for _ in range(max(1, cfg["warmup"])):
                side.step()
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                result["steps"] = [side.step()]
            result["profile_table"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
            averages = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:20]
            result["profile_top_ops"] = [
                {"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in averages
            ]
    result["peak_rss_gib"] = peak_rss_gib()
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------


def run_worker(
    args: argparse.Namespace, kind: str, task: str, workdir: Path, tag: str, attn_implementation: str | None = None
) -> dict:
    python = args.reference_python if kind in ("init", "reference") else sys.executable
    result = workdir / f"result-{tag}.json"
    worker_args = ["--worker", kind, "--task", task, "--workdir", str(workdir), "--result", str(result)]
    if attn_implementation:
        worker_args += ["--attn-implementation", attn_implementation]
    return _common.run_worker(python, __file__, worker_args, result)


def grad_differences(workdir: Path, tag_a: str, tag_b: str) -> dict[str, float]:
    """Relative L2 difference ||g_a - g_b|| / ||g_a|| of the gradients of each tower (same parameter names)."""
    from safetensors.torch import load_file

    a = load_file(str(workdir / f"result-{tag_a}.grads.safetensors"))
    b = load_file(str(workdir / f"result-{tag_b}.grads.safetensors"))
    if set(a) != set(b):
        raise RuntimeError(f"Different parameters received gradients: {sorted(set(a) ^ set(b))[:5]}")
    out = {}
    for group in ("embedder", "encoder"):
        keys = [k for k in sorted(a) if k.startswith(group + ".")]
        x = torch.cat([a[k].flatten().double() for k in keys])
        y = torch.cat([b[k].flatten().double() for k in keys])
        out[group] = float((x - y).norm() / x.norm().clamp_min(1e-300))
    return out


def summarise(rounds: list[dict]) -> dict:
    medians = [statistics.median(s["total"] for s in r["steps"]) for r in rounds]
    best = min(range(len(rounds)), key=lambda i: medians[i])
    steps = rounds[best]["steps"]
    return {
        "round_median_step_seconds": medians,
        "best_step_seconds": medians[best],
        "steps_per_s": 1.0 / medians[best],
        "best_round_phase_seconds": {
            phase: statistics.median(s[phase] for s in steps) for phase in ("forward", "backward", "optimizer")
        },
        "peak_rss_gib": max(r["peak_rss_gib"] for r in rounds),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if not args.reference_python:
        raise SystemExit(
            "Give the Python of an environment with the original transformers REALM (transformers<=4.46), e.g. "
            "--reference-python ../realm-ref-venv/bin/python, or set REALM_REFERENCE_PYTHON."
        )
    info = machine_info()
    print(f"Machine: {info}", flush=True)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_pretraining_step-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        cfg = {name: getattr(args, name) for name in SIZE_FIELDS}
        cfg.update(warmup=args.warmup, steps=args.steps)
        (workdir / "config.json").write_text(json.dumps(cfg, indent=2))
        from safetensors.torch import save_file

        batch = make_batch(cfg)
        save_file({k: v.contiguous() for k, v in batch.items()}, str(workdir / "batch.safetensors"))
        num_masked = int((batch["labels"] != -100).sum())
        init = run_worker(args, "init", "init", workdir, "init")
        print(f"Reference weights initialised ({init['num_parameters']:,} parameters in the scorer)", flush=True)

        # Same numbers first (eval mode, no dropout): loss, gradients, loss after one AdamW step. realm_hf is checked
        # with SDPA (the timed configuration) and with eager attention (the reference's kernel).
        ref = run_worker(args, "reference", "check", workdir, "check-reference")
        ours = run_worker(args, "realm_hf", "check", workdir, "check-realm_hf")
        ours_eager = run_worker(args, "realm_hf", "check", workdir, "check-realm_hf-eager", "eager")
        agreement = {
            "loss_reference": ref["loss_before"],
            "loss_realm_hf": ours["loss_before"],
            "loss_abs_diff": abs(ref["loss_before"] - ours["loss_before"]),
            "loss_after_one_step_abs_diff": abs(ref["loss_after_one_step"] - ours["loss_after_one_step"]),
            "loss_abs_diff_eager": abs(ref["loss_before"] - ours_eager["loss_before"]),
            "loss_after_one_step_abs_diff_eager": abs(ref["loss_after_one_step"] - ours_eager["loss_after_one_step"]),
            "grad_rel_diff_sdpa": grad_differences(workdir, "check-reference", "check-realm_hf"),
            "grad_rel_diff_eager": grad_differences(workdir, "check-reference", "check-realm_hf-eager"),
            "grad_norms_reference": ref["grad_norms"],
            "grad_norms_realm_hf": ours["grad_norms"],
            "trainable_parameters": {
                "reference": ref["num_trainable_parameters"],
                "realm_hf": ours["num_trainable_parameters"],
            },
            "unexpected_keys": {"reference": ref["unexpected_keys"], "realm_hf": ours["unexpected_keys"]},
        }
        agreement["losses_agree"] = bool(
            max(
                agreement[k]
                for k in (
                    "loss_abs_diff",
                    "loss_after_one_step_abs_diff",
                    "loss_abs_diff_eager",
                    "loss_after_one_step_abs_diff_eager",
                )
            )
            <= args.tolerance
        )
        print(f"Agreement: {json.dumps(agreement)}", flush=True)
        if not agreement["losses_agree"]:
            raise SystemExit(f"The losses differ by more than {args.tolerance}; not timing.")

        timings: dict[str, list[dict]] = {"reference": [], "realm_hf": []}
        for round_index in range(args.rounds):
            order = ("reference", "realm_hf") if round_index % 2 == 0 else ("realm_hf", "reference")
            for kind in order:
                timings[kind].append(run_worker(args, kind, "time", workdir, f"time-{kind}-{round_index}"))
            medians = {k: statistics.median(s["total"] for s in v[-1]["steps"]) for k, v in timings.items()}
            print(
                f"round {round_index}: reference {medians['reference']:.2f} s/step, realm_hf "
                f"{medians['realm_hf']:.2f} s/step, ratio {medians['reference'] / medians['realm_hf']:.2f}x, "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        summary = {kind: summarise(rounds) for kind, rounds in timings.items()}
        summary["reference"]["attn_implementation"] = timings["reference"][0]["attn_implementation"]
        summary["realm_hf"]["attn_implementation"] = timings["realm_hf"][0]["attn_implementation"]
        speedup = summary["realm_hf"]["steps_per_s"] / summary["reference"]["steps_per_s"]
        per_round = [
            statistics.median(s["total"] for s in r["steps"]) / statistics.median(s["total"] for s in o["steps"])
            for r, o in zip(timings["reference"], timings["realm_hf"])
        ]
        profiles = {}
        if args.profile:
            for kind in ("reference", "realm_hf"):
                profiles[kind] = run_worker(args, kind, "profile", workdir, f"profile-{kind}")
                print(f"\nProfile of one {kind} step (train mode):\n{profiles[kind]['profile_table']}", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    info["load_average_at_end"] = os.getloadavg()
    results = {
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "task", "result")},
        "sizes": {
            **cfg,
            "joint_len": args.query_len + args.block_len,
            "masked_tokens_in_batch": num_masked,
        },
        "machine": info,
        "versions": {"reference": init["transformers"], "realm_hf_transformers": ours["transformers"]},
        "agreement": agreement,
        "summary": summary,
        "per_round_speedup": per_round,
        "timing_rounds": timings,
        "profiles": {k: {"top_ops": v["profile_top_ops"], "steps": v["steps"]} for k, v in profiles.items()},
        "goals": {"speedup": speedup, "goal_1_3x_met": speedup >= 1.3},
    }
    print_table(args, results)
    return write_results(args.output, results, reference_replacements(args.reference_python, workdir=workdir))


def fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2e}" for k, v in values.items())


def print_table(args: argparse.Namespace, results: dict) -> None:
    s, a = results["summary"], results["agreement"]
    print(
        f"\n### Pre-training step: hidden {args.hidden_size}, {args.num_layers} layers, vocab {args.vocab_size}, "
        f"proj {args.proj_size}, batch {args.batch_size} x {args.num_candidates} candidates, query {args.query_len} / "
        f"block {args.block_len} / joint {args.query_len + args.block_len} tokens, "
        f"{results['sizes']['masked_tokens_in_batch']} masked tokens, dropout {args.dropout}, {os.cpu_count()} CPU "
        "cores\n"
    )
    print("| implementation | attention | s/step | steps/s | forward / backward / optimizer (s) | peak RSS (GiB) |")
    print("|---|---|---:|---:|---:|---:|")
    names = {
        "reference": f"transformers {results['versions']['reference']} RealmScorer + RealmKnowledgeAugEncoder",
        "realm_hf": "realm_hf RealmForPreTraining",
    }
    for kind in ("reference", "realm_hf"):
        r = s[kind]
        phases = " / ".join(f"{r['best_round_phase_seconds'][p]:.2f}" for p in ("forward", "backward", "optimizer"))
        print(
            f"| {names[kind]} | {r['attn_implementation']} | {r['best_step_seconds']:.2f} | {r['steps_per_s']:.3f} | "
            f"{phases} | {r['peak_rss_gib']:.2f} |"
        )
    print(
        f"\nSpeed-up (steps/s, best rounds): {results['goals']['speedup']:.2f}x; per round: "
        f"{[round(x, 2) for x in results['per_round_speedup']]}. Loss agreement (eval mode): |diff| "
        f"{a['loss_abs_diff']:.2e} before, {a['loss_after_one_step_abs_diff']:.2e} after one AdamW step "
        f"(realm_hf with eager attention: {a['loss_abs_diff_eager']:.2e} / {a['loss_after_one_step_abs_diff_eager']:.2e}); "
        f"gradient relative L2 differences, SDPA {fmt(a['grad_rel_diff_sdpa'])}, eager {fmt(a['grad_rel_diff_eager'])}; "
        f"gradient norms (reference) {fmt(a['grad_norms_reference'])}."
    )
    print(f"Goals: {json.dumps(results['goals'])}")


if __name__ == "__main__":
    main()
