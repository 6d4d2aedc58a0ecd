"""Build / save / load / query a REALM-sized synthetic `RealmIndex` (13,350,000 x 128 by default).

Three phases run in separate processes so that each phase's peak RSS (`resource.getrusage`) is its own:

1. `generate`: mixture-of-Gaussians block embeddings written chunk by chunk to a `.npy` memmap, plus questions.
2. `build`: `RealmIndex.build` over the memory-mapped embeddings (no copy), then `save_pretrained`.
3. `query`: `RealmIndex.from_pretrained` (memory-mapped), approximate search QPS for several `nprobe` and
   `refine_factor` values, exact (Flat) search QPS on the same memory-mapped matrix, and recall@k against the exact
   top-k on a sample of questions.

Peak RSS counts file-backed pages of memory-mapped files that were touched (the embeddings during exact search or
re-scoring); `rss_anon_mb` is the anonymous (heap) part at the end of a phase.

Usage:

    python benchmarks/bench_index_scale.py --output outputs/bench_index_scale.json
    python benchmarks/bench_index_scale.py --num-blocks 1000000 --output /tmp/scale_1m.json
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import Stopwatch, best_of, write_results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-blocks", type=int, default=13_350_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--num-questions", type=int, default=1024)
    parser.add_argument("--recall-sample", type=int, default=256, help="questions with exact ground truth")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--num-clusters", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--index-factory", type=str, default="IVF4096_HNSW32,SQ8")
    parser.add_argument("--train-size", type=int, default=160_000, help="39 x nlist is the FAISS minimum")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--refine-factor", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--reference-questions", type=int, default=16, help="questions timed with the old per-question torch path"
    )
    parser.add_argument("--work-dir", type=str, default="/tmp/realm_bench_scale")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=str, default=None)
    parser.add_argument("--phase", choices=["generate", "build", "query"], default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def memory_stats() -> dict:
    stats = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "RssFile")):
                name, value = line.split(":")
                stats[f"{name.lower().replace('vm', '')}_mb"] = int(value.split()[0]) / 1024
    return stats


def directory_size(path: Path) -> dict:
    sizes = {}
    for child in sorted(path.iterdir()):
        files = [child] if child.is_file() else [p for p in child.rglob("*") if p.is_file()]
        sizes[child.name] = sum(p.stat().st_size for p in files)
    sizes["total"] = sum(sizes.values())
    return sizes


# ----------------------------------------------------------------------------------------------------------------
# Phases (each runs in its own process)
# ----------------------------------------------------------------------------------------------------------------


def phase_generate(args: argparse.Namespace, work: Path) -> dict:
    from bench_search import make_mixture

    sample = make_mixture(args.num_clusters, args.dim, args.noise, False, args.seed)
    with Stopwatch() as clock:
        blocks = np.lib.format.open_memmap(
            work / "source.npy", mode="w+", dtype=np.float32, shape=(args.num_blocks, args.dim)
        )
        sample(blocks, chunk_rows=1 << 20)
        blocks.flush()
        del blocks
        np.save(work / "questions.npy", sample(np.empty((args.num_questions, args.dim), dtype=np.float32)))
    return {"generate_seconds": clock.seconds, **memory_stats()}


def phase_build(args: argparse.Namespace, work: Path) -> dict:
    import datasets

    from realm_hf.retrieval.index import RealmIndex

    embeddings = np.load(work / "source.npy", mmap_mode="r")
    corpus = datasets.Dataset.from_dict({"doc_id": np.arange(args.num_blocks, dtype=np.int64) // 4})
    with Stopwatch() as build:
        index = RealmIndex.build(
            corpus,
            embeddings,
            args.index_factory,
            train_size=args.train_size,
            nprobe=args.nprobe[0],
            show_progress=False,
        )
    build_memory = memory_stats()
    with Stopwatch() as save:
        index.save_pretrained(work / "index")
    return {
        "build_seconds": build.seconds,
        "build_memory": build_memory,
        "save_seconds": save.seconds,
        "size_on_disk_bytes": directory_size(work / "index"),
        **memory_stats(),
    }


def phase_query(args: argparse.Namespace, work: Path) -> dict:
    from realm_hf.retrieval.index import RealmIndex

    questions = np.load(work / "questions.npy")
    with Stopwatch() as load:
        index = RealmIndex.from_pretrained(work / "index", mmap=True)
    result = {"load_seconds": load.seconds, "after_load_memory": memory_stats()}

    sample = questions[: args.recall_sample]
    exact = RealmIndex.build(None, index.embeddings, "Flat", show_progress=False)  # same memmap, no copy
    exact.search(sample[:4], args.k)  # warm the page cache
    (_, exact_ids), exact_seconds = best_of(lambda: exact.search(sample, args.k), repeats=1)
    result["flat_exact"] = {"qps": len(sample) / exact_seconds, "questions": len(sample)}
    result["after_exact_memory"] = memory_stats()
    if args.reference_questions:
        from bench_search import reference_search

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            block_emb = torch.from_numpy(index.embeddings)  # the old REALM kept this as an in-memory buffer
        _, ref_ids, seconds = reference_search(block_emb, sample[: args.reference_questions], args.k)
        result["reference"] = {
            "qps": args.reference_questions / seconds,
            "questions": args.reference_questions,
            "identical_top_k_rows": int(np.all(ref_ids == exact_ids[: args.reference_questions], axis=1).sum()),
        }

    runs = []
    for nprobe in args.nprobe:
        for refine in args.refine_factor:
            index.set_search_parameters(nprobe=nprobe, refine_factor=refine)
            index.search(questions[:32], args.k)
            (_, ids), seconds = best_of(lambda: index.search(questions, args.k), repeats=1)
            recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids[: len(sample)], exact_ids)])
            runs.append({"nprobe": nprobe, "refine_factor": refine, "qps": len(questions) / seconds, "recall": recall})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    result["approximate"] = runs
    result.update(memory_stats())
    return result


PHASES = {"generate": phase_generate, "build": phase_build, "query": phase_query}


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------


def run_phase(phase: str, argv: list[str]) -> dict:
    with Stopwatch() as clock:
        proc = subprocess.run(
            [sys.executable, __file__, *argv, "--phase", phase], stdout=subprocess.PIPE, text=True, check=True
        )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = clock.seconds
    print(f"[{phase}] {json.dumps(result)}", flush=True)
    return result


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    work = Path(args.work_dir)
    if args.phase:
        print(json.dumps(PHASES[args.phase](args, work), default=float))
        return {}
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    load_start = os.getloadavg()
    with Stopwatch() as total:
        try:
            results = {phase: run_phase(phase, argv) for phase in PHASES}
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    flat_bytes = args.num_blocks * args.dim * 4
    summary = {
        "config": {k: v for k, v in vars(args).items() if k != "phase"},
        "machine": {"cpu_count": os.cpu_count(), "load_average_at_start": load_start, "at_end": os.getloadavg()},
        "flat_embeddings_bytes": flat_bytes,
        "total_wall_seconds": total.seconds,
        **results,
    }
    print_table(args, summary)
    write_results(args.output, json.loads(json.dumps(summary, default=float)))
    return summary


def print_table(args: argparse.Namespace, s: dict) -> None:
    gb = 1 << 30
    build, query = s["build"], s["query"]
    sizes = build["size_on_disk_bytes"]
    print(
        f"\n### Index scale benchmark: {args.num_blocks:,} x {args.dim}, {args.index_factory}, {os.cpu_count()} cores\n"
    )
    print("| quantity | value |\n|---|---:|")
    print(f"| Flat embeddings (float32) in memory / on disk | {s['flat_embeddings_bytes'] / gb:.2f} GiB |")
    print(f"| {args.index_factory} `index.faiss` size | {sizes.get('index.faiss', 0) / gb:.3f} GiB |")
    print(f"| saved directory total (corpus + embeddings.npy + index.faiss) | {sizes['total'] / gb:.2f} GiB |")
    print(f"| generate time | {s['generate']['generate_seconds']:.0f} s |")
    print(f"| build time (train + add) | {build['build_seconds']:.0f} s |")
    print(f"| save time | {build['save_seconds']:.0f} s |")
    print(f"| build peak RSS (incl. touched mmap pages) | {build['build_memory']['peak_rss_mb'] / 1024:.2f} GiB |")
    print(f"| build RssAnon after build | {build['build_memory'].get('rssanon_mb', 0) / 1024:.2f} GiB |")
    print(f"| load time (mmap) | {query['load_seconds']:.2f} s |")
    print(f"| RSS after load | {query['after_load_memory']['rss_mb'] / 1024:.2f} GiB |")
    if "reference" in query:
        ref = query["reference"]
        print(f"| reference: old REALM torch einsum+topk, 1 question/call | {ref['qps']:.2f} q/s |")
    print(f"| exact Flat search over the mmapped embeddings (batched) | {query['flat_exact']['qps']:.1f} q/s |")
    print(f"| query-phase peak RSS (incl. page cache of touched embeddings) | {query['peak_rss_mb'] / 1024:.2f} GiB |")
    print(f"\n| nprobe | refine_factor | questions/s | recall@{args.k} vs exact ({args.recall_sample} q) |")
    print("|---:|---:|---:|---:|")
    for run in query["approximate"]:
        print(f"| {run['nprobe']} | {run['refine_factor']} | {run['qps']:,.0f} | {run['recall']:.4f} |")
    print(f"\nTotal wall time {s['total_wall_seconds'] / 60:.1f} min.")


if __name__ == "__main__":
    main()
