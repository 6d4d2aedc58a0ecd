"""Search throughput: the old transformers REALM brute force vs `RealmIndex` exact and approximate search.

The reference is exactly what transformers' `RealmForOpenQA` did (one question at a time):

    batch_scores = torch.einsum("BD,QD->QB", block_emb, question_projection)
    _, retrieved_block_ids = torch.topk(batch_scores, k=searcher_beam_size, dim=-1)

It is compared with `RealmIndex` "Flat" (exact, all questions in one batched call), IVF and HNSW indexes with swept
`nprobe` / `efSearch`. Vectors are a mixture of Gaussians (clustered, not normalised by default). Recall@k of the
approximate indexes is measured against the exact top-k; the exact top-k is checked against the reference.

Usage:

    python benchmarks/bench_search.py --output outputs/bench_search.json
    python benchmarks/bench_search.py --num-blocks 100000 --num-questions 256 --output /tmp/small.json
"""

import argparse
import json
import logging
import os

import faiss
import numpy as np
import torch
from _common import Stopwatch, best_of, write_results
from _common import machine_info as common_machine_info

from realm_hf.retrieval.index import RealmIndex


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-blocks", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--num-questions", type=int, default=512)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--num-clusters", type=int, default=2000, help="Gaussian mixture components")
    parser.add_argument("--noise", type=float, default=1.0, help="within-cluster std relative to the centres' std")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise blocks and questions")
    parser.add_argument("--reference-questions", type=int, default=None, help="time the reference on a subset")
    parser.add_argument("--ivf-nlist", type=int, default=None, help="default: 4 * sqrt(num_blocks), power of 2")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--skip-hnsw", action="store_true")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch and FAISS OpenMP threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=str, default=None, help="JSON results file")
    return parser.parse_args(argv)


def make_mixture(num_clusters: int, dim: int, noise: float, normalize: bool, seed: int):
    """A sampler for a mixture of Gaussians with Zipf-like (1/sqrt(rank)) cluster weights.

    Returns `sample(out)`, which fills the float32 array `out` of shape `(n, dim)` (a memmap works) in chunks.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_clusters, dim), dtype=np.float32)
    weights = 1.0 / np.arange(1, num_clusters + 1) ** 0.5
    weights /= weights.sum()

    def sample(out: np.ndarray, chunk_rows: int = 1 << 18) -> np.ndarray:
        for start in range(0, len(out), chunk_rows):
            end = min(len(out), start + chunk_rows)
            labels = rng.choice(num_clusters, size=end - start, p=weights)
            chunk = centers[labels] + noise * rng.standard_normal((end - start, dim), np.float32)
            if normalize:
                chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
            out[start:end] = chunk
        return out

    return sample


def make_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Blocks and questions drawn from the same mixture of Gaussians."""
    sample = make_mixture(args.num_clusters, args.dim, args.noise, args.normalize, args.seed)
    blocks = sample(np.empty((args.num_blocks, args.dim), dtype=np.float32))
    questions = sample(np.empty((args.num_questions, args.dim), dtype=np.float32))
    return blocks, questions


def reference_search(block_emb: torch.Tensor, questions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The old `RealmForOpenQA` retrieval, one question at a time. Returns scores, ids and seconds."""
    scores = np.empty((len(questions), k), dtype=np.float32)
    ids = np.empty((len(questions), k), dtype=np.int64)
    with torch.no_grad():
        for q in questions[:3]:  # warm-up
            torch.topk(torch.einsum("BD,QD->QB", block_emb, torch.from_numpy(q[None])), k=k, dim=-1)
        with Stopwatch() as clock:
            for i, q in enumerate(questions):
                question_projection = torch.from_numpy(q[None])
                batch_scores = torch.einsum("BD,QD->QB", block_emb, question_projection)
                top_scores, retrieved_block_ids = torch.topk(batch_scores, k=k, dim=-1)
                scores[i], ids[i] = top_scores[0].numpy(), retrieved_block_ids[0].numpy()
    return scores, ids, clock.seconds


def timed_search(
    index: RealmIndex, questions: np.ndarray, k: int, repeats: int
) -> tuple[np.ndarray, np.ndarray, float]:
    index.search(questions[: min(32, len(questions))], k)  # warm-up
    (scores, ids), best = best_of(lambda: index.search(questions, k), repeats)
    return scores, ids, best


def recall_at_k(ids: np.ndarray, exact_ids: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact_ids)]))


def compare_with_reference(blocks: np.ndarray, questions: np.ndarray, ids: np.ndarray, ref_ids: np.ndarray) -> dict:
    """Rows whose top-k ids equal the reference's; differing rows must be float32 near-ties."""
    same = np.all(ids == ref_ids, axis=1)
    max_gap = 0.0
    for row in np.flatnonzero(~same):
        ours = np.sort(blocks[ids[row]] @ questions[row])[::-1]
        theirs = np.sort(blocks[ref_ids[row]] @ questions[row])[::-1]
        max_gap = max(max_gap, float(np.max(np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs)))))
    return {"identical_rows": int(same.sum()), "rows": len(ids), "max_relative_score_gap_on_differing_rows": max_gap}


def approximate_search_rows(
    args: argparse.Namespace, vectors: np.ndarray, questions: np.ndarray, exact_ids: np.ndarray, k: int, seed: int = 0
) -> list[dict]:
    """Builds IVF (and, unless `args.skip_hnsw`, HNSW) indexes over `vectors` and measures questions/s and recall@k
    against `exact_ids` for every `args.nprobe` / `args.ef_search`."""
    rows = []
    nlist = args.ivf_nlist or int(2 ** round(np.log2(4 * np.sqrt(len(vectors)))))
    builds = [(f"IVF{nlist},Flat", "nprobe", [n for n in args.nprobe if n <= nlist])]
    if not args.skip_hnsw:
        builds.append((f"HNSW{args.hnsw_m}", "hnsw_ef_search", args.ef_search))
    for factory, parameter, values in builds:
        with Stopwatch() as build:
            index = RealmIndex.build(None, vectors, factory, show_progress=False, seed=seed)
        print(f"built {factory} in {build.seconds:.1f}s", flush=True)
        for value in values:
            index.set_search_parameters(**{parameter: value})
            _, ids, seconds = timed_search(index, questions, k, args.repeats)
            label = "nprobe" if parameter == "nprobe" else "efSearch"
            rows.append(
                {
                    "method": f"RealmIndex {factory} {label}={value}",
                    "qps": len(questions) / seconds,
                    "recall": recall_at_k(ids, exact_ids),
                    "build_seconds": build.seconds,
                }
            )
            print(rows[-1], flush=True)
        del index
    return rows


def machine_info() -> dict:
    """`_common.machine_info` plus the thread counts and library versions this benchmark depends on."""
    return {
        **common_machine_info(),
        "torch_threads": torch.get_num_threads(),
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    info = machine_info()
    print(f"Machine: {info}", flush=True)

    with Stopwatch() as clock:
        blocks, questions = make_data(args)
    print(f"Generated {blocks.shape} blocks and {questions.shape} questions in {clock.seconds:.1f}s")
    k = args.k
    rows = []

    # 1+2. Reference (old RealmForOpenQA, one question at a time) and RealmIndex exact (Flat, one batched call),
    # timed in interleaved rounds so that background load hits both alike; the best round of each is reported.
    num_ref = args.reference_questions or len(questions)
    block_emb = torch.from_numpy(blocks)
    exact = RealmIndex.build(None, blocks, "Flat", show_progress=False)
    ref_times, exact_times = [], []
    for _ in range(args.repeats):
        _, ref_ids, seconds = reference_search(block_emb, questions[:num_ref], k)
        ref_times.append(seconds)
        exact_scores, exact_ids, seconds = timed_search(exact, questions, k, repeats=1)
        exact_times.append(seconds)
        print(
            f"round: reference {num_ref / ref_times[-1]:.1f} q/s, exact {len(questions) / seconds:.1f} q/s", flush=True
        )
    ref_qps = num_ref / min(ref_times)
    exact_qps = len(questions) / min(exact_times)
    rows.append({"method": "reference: torch einsum+topk, 1 question/call", "qps": ref_qps, "recall": 1.0})
    rows.append({"method": "RealmIndex Flat (exact, batched)", "qps": exact_qps, "recall": 1.0})
    agreement = compare_with_reference(blocks, questions[:num_ref], exact_ids[:num_ref], ref_ids)
    torch_ids = exact.exact_search_torch(questions[:num_ref], k)[1]
    agreement_torch_oracle = compare_with_reference(blocks, questions[:num_ref], torch_ids, ref_ids)
    print(f"exact Flat agreement with reference: {agreement}", flush=True)
    timing_rounds = {"reference_seconds": ref_times, "exact_seconds": exact_times}

    # 3. Approximate: IVF (nprobe sweep) and HNSW (efSearch sweep).
    approx = approximate_search_rows(args, blocks, questions, exact_ids, k)
    rows.extend(approx)
    for row in rows:
        row["speedup_vs_reference"] = row["qps"] / ref_qps

    good = [r for r in approx if r["recall"] >= args.target_recall]
    best_approx = max(good, key=lambda r: r["qps"]) if good else None
    goals = {
        "exact_speedup": exact_qps / ref_qps,
        "exact_goal_5x_met": exact_qps / ref_qps >= 5,
        "exact_top_k_identical_to_reference": agreement["identical_rows"] == agreement["rows"],
        "best_approximate": best_approx["method"] if best_approx else None,
        "best_approximate_speedup": best_approx["speedup_vs_reference"] if best_approx else None,
        "best_approximate_recall": best_approx["recall"] if best_approx else None,
        "approximate_goal_50x_at_recall_met": bool(best_approx and best_approx["speedup_vs_reference"] >= 50),
    }
    info["load_average_at_end"] = os.getloadavg()
    results = {
        "config": vars(args),
        "machine": info,
        "rows": rows,
        "exact_vs_reference": agreement,
        "exact_timing_rounds": timing_rounds,
        "exact_search_torch_vs_reference": agreement_torch_oracle,
        "goals": goals,
    }
    print_table(args, rows, goals, agreement)
    write_results(args.output, results)
    return results


def print_table(args: argparse.Namespace, rows: list[dict], goals: dict, agreement: dict) -> None:
    print(
        f"\n### Search benchmark: {args.num_blocks:,} blocks x {args.dim} dims, {args.num_questions} questions, "
        f"k={args.k}, {os.cpu_count()} CPU cores\n"
    )
    print(f"| method | questions/s | speed-up vs reference | recall@{args.k} |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['method']} | {row['qps']:,.1f} | {row['speedup_vs_reference']:,.1f}x | {row['recall']:.4f} |")
    print(
        f"\nExact top-{args.k} identical to the reference for {agreement['identical_rows']}/{agreement['rows']} "
        f"questions (max relative score gap on differing rows: "
        f"{agreement['max_relative_score_gap_on_differing_rows']:.2e})."
    )
    print(f"Goals: {json.dumps(goals)}")


if __name__ == "__main__":
    main()
