"""One index in one process against the same index sharded over 2 processes (`ShardedRealmIndex`, gloo), side by
side in one run on the same synthetic block embeddings (2,000,000 x 128 by default, a mixture of Gaussians).

Phases, each in its own process(es) so that every peak RSS (`resource.getrusage`) is its own:

1. `generate`: block embeddings written to a `.npy` memmap, the corpus (a `doc_id` column, Arrow on disk, memory-mapped
   by every process), questions, and the exact top-k of a sample of questions (the recall ground truth).
2. `worker`, once as 1 process and once as 2 (`torch.distributed.run`): each process builds the search index over its
   blocks (all of them, or its half) from the memory-mapped embeddings, then answers its share of the questions
   (collective search: queries all-gathered, every shard searched, candidates merged). Reports build time (the FAISS
   part of a refresh; re-embedding splits the same way, by construction), search QPS over all questions, recall@k
   against the exact top-k, and each process's peak RSS (touched file-backed pages of the memmap included), also
   less what the process held before touching the index (`index_rss_mb`: the libraries alone are about 0.5 GB).

Threads: the single process gets all of `--threads`, each of the 2 processes half of them.

Usage:

    python benchmarks/bench_sharded_index.py --output benchmarks/results/bench_sharded_index.json
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from _common import Stopwatch, machine_info, write_results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-blocks", type=int, default=2_000_000, help="Blocks in the index.")
    parser.add_argument("--dim", type=int, default=128, help="Embedding dimension.")
    parser.add_argument("--num-questions", type=int, default=2048, help="Questions timed.")
    parser.add_argument("--recall-sample", type=int, default=256, help="Questions with exact ground truth.")
    parser.add_argument("--k", type=int, default=5, help="Top-k.")
    parser.add_argument("--num-clusters", type=int, default=2000, help="Gaussians of the mixture.")
    parser.add_argument("--index-factory", default="IVF1024,SQ8", help="FAISS factory string of every (shard) index.")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists searched.")
    parser.add_argument("--train-size", type=int, default=100_000, help="Vectors the IVF quantiser is trained on.")
    parser.add_argument("--threads", type=int, default=2, help="Threads in all (the 2 processes get half each).")
    parser.add_argument("--seed", type=int, default=0, help="Random seed of the data.")
    parser.add_argument("--work-dir", default="/tmp/realm_bench_sharded", help="Scratch directory (deleted after).")
    parser.add_argument("--output", default=None, help="JSON results file.")
    parser.add_argument("--phase", choices=["generate", "worker"], default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_generate(args: argparse.Namespace, work: Path) -> dict:
    import datasets
    import torch
    from bench_search import make_mixture

    sample = make_mixture(args.num_clusters, args.dim, 1.0, False, args.seed)
    blocks = np.lib.format.open_memmap(work / "blocks.npy", "w+", np.float32, (args.num_blocks, args.dim))
    sample(blocks, chunk_rows=1 << 20)
    blocks.flush()
    questions = sample(np.empty((args.num_questions, args.dim), np.float32))
    np.save(work / "questions.npy", questions)
    corpus = datasets.Dataset.from_dict({"doc_id": np.arange(args.num_blocks, dtype=np.int64)})
    corpus.save_to_disk(str(work / "corpus"))
    from realm_hf.retrieval.index import RealmIndex

    torch.set_num_threads(args.threads)
    exact = RealmIndex.build(None, blocks, "Flat", show_progress=False)  # the same memmap, no copy
    np.save(work / "exact_ids.npy", exact.search(questions[: args.recall_sample], args.k)[1])
    return {"peak_rss_mb": memory_mb()}


def phase_worker(args: argparse.Namespace, work: Path) -> dict:
    import datasets
    import torch
    import torch.distributed as dist

    from realm_hf import RealmIndex, ShardedRealmIndex
    from realm_hf.retrieval.sharded import shard_range

    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    torch.set_num_threads(max(1, args.threads // world_size))
    baseline = memory_mb()  # the libraries alone (torch, datasets, FAISS, the process group)
    corpus = datasets.load_from_disk(str(work / "corpus"))
    blocks = np.load(work / "blocks.npy", mmap_mode="r")
    start, end = shard_range(len(corpus), rank, world_size)

    def barrier():
        if dist.is_initialized():
            dist.barrier()

    barrier()
    with Stopwatch() as build:
        shard = RealmIndex.build(
            corpus.select(range(start, end)), blocks[start:end], args.index_factory, train_size=args.train_size,
            nprobe=args.nprobe, show_progress=False,
        )  # fmt: skip
        index = ShardedRealmIndex(corpus, shard)
        barrier()
    build_seconds = build.seconds
    rss_after_build = memory_mb()

    questions = np.load(work / "questions.npy")
    mine = np.arange(rank, len(questions), world_size)  # every process its share of the questions
    index.search(questions[mine[:8]], args.k)  # warm-up
    barrier()
    with Stopwatch() as search:
        _, ids = index.search(questions[mine], args.k)
        barrier()
    search_seconds = search.seconds
    exact = np.load(work / "exact_ids.npy")
    sampled = mine < len(exact)
    hits = [len(set(a) & set(b)) for a, b in zip(ids[sampled], exact[mine[sampled]])]
    result = {
        "rank": rank,
        "world_size": world_size,
        "shard_blocks": end - start,
        "build_seconds": build_seconds,
        "search_seconds": search_seconds,
        "questions": len(mine),
        "recall_hits": int(sum(hits)),
        "recall_total": args.k * len(hits),
        "rss_after_build_mb": rss_after_build,
        "peak_rss_mb": memory_mb(),
        "baseline_rss_mb": baseline,
    }
    if dist.is_initialized():
        gathered = [None] * world_size
        dist.all_gather_object(gathered, result)
        dist.destroy_process_group()
        return {"processes": gathered} if rank == 0 else {}
    return {"processes": [result]}


def run(args: argparse.Namespace, argv: list[str], phase: str, processes: int = 1) -> dict:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // processes))}
    completed = subprocess.run(
        [*launcher, __file__, *argv, "--phase", phase], stdout=subprocess.PIPE, text=True, check=True, env=env
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    return next(json.loads(line) for line in lines if json.loads(line))


def summarise(run_result: dict) -> dict:
    processes = run_result["processes"]
    hits = sum(p["recall_hits"] for p in processes)
    total = sum(p["recall_total"] for p in processes)
    return {
        "processes": len(processes),
        "build_seconds": max(p["build_seconds"] for p in processes),
        "search_qps": sum(p["questions"] for p in processes) / max(p["search_seconds"] for p in processes),
        "recall_at_k": hits / total,
        "peak_rss_mb_per_process": max(p["peak_rss_mb"] for p in processes),
        "index_rss_mb_per_process": max(p["peak_rss_mb"] - p["baseline_rss_mb"] for p in processes),
        "per_process": processes,
    }


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    work = Path(args.work_dir)
    if args.phase is not None:
        result = {"generate": phase_generate, "worker": phase_worker}[args.phase](args, work)
        print(json.dumps(result), flush=True)
        return result
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        inner = [a for a in argv if a not in ("--output",)]
        if "--output" in argv:
            position = argv.index("--output")
            inner = argv[:position] + argv[position + 2 :]
        inner += ["--work-dir", str(work)]
        generated = run(args, inner, "generate")
        one = summarise(run(args, inner, "worker", processes=1))
        two = summarise(run(args, inner, "worker", processes=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "benchmark": "bench_sharded_index",
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("phase", "output", "work_dir")},
        "generate_peak_rss_mb": generated["peak_rss_mb"],
        "one_process": one,
        "two_processes": two,
        "ratios_two_over_one": {
            "peak_rss_per_process": two["peak_rss_mb_per_process"] / one["peak_rss_mb_per_process"],
            "index_rss_per_process": two["index_rss_mb_per_process"] / one["index_rss_mb_per_process"],
            "build_seconds": two["build_seconds"] / one["build_seconds"],
            "search_qps": two["search_qps"] / one["search_qps"],
        },
    }
    write_results(args.output, results)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    return results


if __name__ == "__main__":
    main()
