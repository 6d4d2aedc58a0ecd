"""The same numbers before and after a restructuring: realm_hf from two source trees on the same inputs.

Each tree's `realm_hf` runs in its own subprocess (`PYTHONPATH=<tree>`, one thread) and computes, on inputs both
build from fixed seeds:

* search (what `bench_search.py` measures, at a small size): top-5 ids and scores of 256 questions over 20,000 x 64
  random blocks, exact (`Flat`) and approximate (`IVF64,Flat`, nprobe 8; the FAISS index built from the same seed);
* the open-QA fine-tuning step (what `bench_finetune_step.py` measures, at a small size): `RealmForOpenQA` of the
  reference fixture over its retriever, the training loss of 3 questions, then the loss after one AdamW step;
* the REALM pre-training loss of a tiny `RealmForPreTraining` over a tiny index, and its gradient norm.

The current tree passes when the top-5 ids are identical and every score and loss is within `--tolerance` (1e-5).
A baseline tree is a checkout of an older commit, e.g. `git worktree add /tmp/baseline 4e5448a`.

Usage:

    python benchmarks/restructure_parity.py --baseline /tmp/baseline --output benchmarks/results/restructure_parity.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]


def worker(output: Path) -> None:
    """Computes every number of this tree's realm_hf into `output` (JSON)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import realm_hf
    from realm_hf import (
        RealmConfig,
        RealmForOpenQA,
        RealmForPreTraining,
        RealmIndex,
        RealmRetriever,
        RealmTokenizerFast,
    )
    from realm_hf.retrieval.corpus import tokenize_blocks
    from realm_hf.retrieval.legacy import load_legacy_block_emb

    results: dict = {"realm_hf_file": str(Path(realm_hf.__file__).parent.parent)}

    rng = np.random.default_rng(0)
    blocks = rng.standard_normal((20_000, 64)).astype(np.float32)
    questions = rng.standard_normal((256, 64)).astype(np.float32)
    for factory in ("Flat", "IVF64,Flat"):
        kwargs = {"nprobe": 8} if factory != "Flat" else {}
        index = RealmIndex.build(None, blocks, index_factory=factory, show_progress=False, seed=0, **kwargs)
        scores, ids = index.search(questions, 5)
        results[f"search_{factory}"] = {"ids": ids.tolist(), "scores": scores.tolist()}

    reference = REPO_ROOT / "tests" / "fixtures" / "reference" / "openqa"
    tokenizer = RealmTokenizerFast.from_pretrained(str(reference / "safetensors"))
    texts = json.loads((reference / "blocks.json").read_text())
    import datasets

    corpus = tokenize_blocks(datasets.Dataset.from_dict({"text": texts}), tokenizer)
    block_emb = load_legacy_block_emb(reference / "legacy_bin").numpy()
    retriever = RealmRetriever(RealmIndex.build(corpus, block_emb, show_progress=False), tokenizer)
    torch.manual_seed(0)
    model = RealmForOpenQA.from_pretrained(
        str(reference / "safetensors"), retriever=retriever, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    model.train()
    batch = tokenizer(["what is the capital of france?", "who wrote hamlet?", "when was it built?"],
                      padding=True, return_tensors="pt")  # fmt: skip
    answers = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in (["paris"], ["shakespeare"], ["1889"])]
    answer_ids = [[list(x) for x in a] for a in answers]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(2):
        out = model(**batch, answer_ids=answer_ids, return_dict=True)
        loss = out.reader_output.loss.mean()
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    results["finetune_losses"] = losses
    results["finetune_retrieved_top5"] = out.retrieved_block_ids.reshape(len(answers), -1)[:, :5].tolist()

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(60)]
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tiny_tokenizer = RealmTokenizerFast.from_pretrained(directory)
    torch.manual_seed(0)
    config = RealmConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, retriever_proj_size=16, max_position_embeddings=64, num_candidates=4,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    pretraining = RealmForPreTraining(config)
    docs = [" ".join(f"w{(7 * d + j) % 60}" for j in range(12)) for d in range(10)]
    tiny_corpus = tokenize_blocks(datasets.Dataset.from_dict({"text": docs}), tiny_tokenizer)
    embeddings = realm_hf.embed_corpus(pretraining.embedder, tiny_corpus, tiny_tokenizer, show_progress=False)
    pretraining.set_retriever(RealmRetriever(RealmIndex.build(tiny_corpus, embeddings, show_progress=False),
                                             tiny_tokenizer))  # fmt: skip
    input_ids = torch.tensor([[2, 10, 4, 12, 3], [2, 20, 21, 4, 3]])
    labels = torch.full_like(input_ids, -100)
    labels[0, 2], labels[1, 3] = 11, 22
    out = pretraining(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels, return_dict=True)
    out.loss.backward()
    norm = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in pretraining.parameters() if p.grad is not None])
    )
    results["pretraining_loss"] = out.loss.item()
    results["pretraining_grad_norm"] = norm.item()
    output.write_text(json.dumps(results))


def run_tree(tree: Path, output: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(output)]
    subprocess.run(command, env=env, cwd=tree, check=True)
    return json.loads(output.read_text())


def compare(baseline: dict, current: dict, tolerance: float) -> dict:
    report = {}
    for key in ("search_Flat", "search_IVF64,Flat"):
        same_ids = baseline[key]["ids"] == current[key]["ids"]
        diff = max(
            abs(a - b) for ra, rb in zip(baseline[key]["scores"], current[key]["scores"]) for a, b in zip(ra, rb)
        )
        report[key] = {"same_top5_ids": same_ids, "max_score_difference": diff}
    report["finetune"] = {
        "same_top5_ids": baseline["finetune_retrieved_top5"] == current["finetune_retrieved_top5"],
        "max_loss_difference": max(
            abs(a - b) for a, b in zip(baseline["finetune_losses"], current["finetune_losses"])
        ),
        "losses": current["finetune_losses"],
    }
    report["pretraining"] = {
        "loss_difference": abs(baseline["pretraining_loss"] - current["pretraining_loss"]),
        "grad_norm_difference": abs(baseline["pretraining_grad_norm"] - current["pretraining_grad_norm"]),
        "loss": current["pretraining_loss"],
    }
    report["passed"] = (
        baseline["realm_hf_file"] != current["realm_hf_file"]
        and all(
            report[k]["same_top5_ids"] and report[k]["max_score_difference"] <= tolerance
            for k in ("search_Flat", "search_IVF64,Flat")
        )  # fmt: skip
        and report["finetune"]["same_top5_ids"]
        and report["finetune"]["max_loss_difference"] <= tolerance
        and report["pretraining"]["loss_difference"] <= tolerance
        and report["pretraining"]["grad_norm_difference"] <= tolerance
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="A source tree of the baseline commit (a git worktree).")
    parser.add_argument("--baseline-commit", default=None, help="The baseline's commit id, recorded in the JSON.")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="Largest score or loss difference accepted.")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file.")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return 0
    if args.baseline is None:
        parser.error("--baseline is required")
    with tempfile.TemporaryDirectory() as directory:
        baseline = run_tree(args.baseline.resolve(), Path(directory) / "baseline.json")
        current = run_tree(REPO_ROOT, Path(directory) / "current.json")
    report = {
        "benchmark": "restructure_parity",
        "baseline_commit": args.baseline_commit,
        "current_commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT
        ).stdout.strip(),  # fmt: skip
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "command": "python benchmarks/restructure_parity.py --baseline <worktree of the baseline commit>",
        "tolerance": args.tolerance,
        "trees_differ": baseline["realm_hf_file"] != current["realm_hf_file"],
        **compare(baseline, current, args.tolerance),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
