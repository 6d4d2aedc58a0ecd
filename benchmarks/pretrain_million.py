"""REALM pre-training over a million documents on a 2-core CPU: the default job's recipe on its synthetic world scaled
to 500,000 people (1,000,050 documents), an approximate index, and the index refreshed by the separate index builder
(`realm-hf index-builder`, a process of its own) while the trainer runs on the other core.

What it does:

1. The world: `make_synthetic_knowledge(num_people, name_pool_size=1000)` (people are combinations of 1,000 first and
   1,000 last names, so the vocabulary stays small); 10% of the people held out of the pre-training stream. The
   stream is the sentences of `--stream-documents` random documents (more than the run consumes); the knowledge
   corpus is every document.
2. The default job's warm starts: the reading warm start of the encoder on other worlds set in the same cities, and
   a weak ICT warm start of the retriever.
3. The initial index: every block embedded (both cores), `--index-factory` (IVF) over them.
4. REALM pre-training with `index_refresh_mode="external"` (the trainer exports its document tower every
   `--export-steps` steps, the builder embeds the million blocks with the newest export and publishes an index, the
   trainer swaps it in), one thread each, for `--max-steps` steps, evaluated every `--eval-steps` steps on masked
   training and held-out facts.

Reports (JSON and a plot): steps/s, the builder's refresh time, index staleness in steps, peak RSS of trainer and
builder, top-1 retrieval of the evidence document and masked-LM accuracy over the steps.

    python benchmarks/pretrain_million.py --output benchmarks/results/pretrain_million.json
"""

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import Stopwatch, machine_info, write_results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-people", type=int, default=500_000, help="People (two documents each).")
    parser.add_argument("--num-cities", type=int, default=50, help="Cities (one document each).")
    parser.add_argument("--name-pool-size", type=int, default=1000, help="First and last names drawn from pools.")
    parser.add_argument("--stream-documents", type=int, default=50_000, help="Documents whose sentences are X.")
    parser.add_argument("--max-steps", type=int, default=900, help="REALM pre-training steps.")
    parser.add_argument("--export-steps", type=int, default=25, help="Export the document tower every N steps.")
    parser.add_argument("--eval-steps", type=int, default=100, help="Evaluate every N steps.")
    parser.add_argument("--num-eval-facts", type=int, default=256, help="Training and held-out facts evaluated.")
    parser.add_argument("--index-factory", default="IVF1024,Flat", help="FAISS factory string of the index.")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF lists searched.")
    parser.add_argument("--train-size", type=int, default=60_000, help="Vectors the IVF quantiser is trained on.")
    parser.add_argument("--embed-batch-size", type=int, default=512, help="Blocks per forward pass when embedding.")
    parser.add_argument("--retriever-learning-rate", type=float, default=1e-4, help="Peak rate of the embedders.")
    parser.add_argument("--ict-steps", type=int, default=None, help="ICT warm-start steps (default: the demo's).")
    parser.add_argument(
        "--retriever-training", default="both", choices=["both", "query_side"], help="RealmPreTrainingArguments'."
    )
    parser.add_argument(
        "--index-search", default="live", choices=["live", "snapshot"], help="RealmPreTrainingArguments'."
    )
    parser.add_argument("--rerank-candidates", type=int, default=0, help="RealmPreTrainingArguments'.")
    parser.add_argument("--num-candidates", type=int, default=8, help="Candidates per sentence (null included).")
    parser.add_argument(
        "--fresh-eval", action="store_true",
        help="At the end, also evaluate against the corpus re-embedded by the final document tower (what the towers "
        "learned; one more embedding of every block, not counted in the training time).",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="Random seed (world, model, data order).")
    parser.add_argument("--work-dir", default="/tmp/realm_million", help="Run directory (deleted unless --keep).")
    parser.add_argument("--keep", action="store_true", help="Keep the run directory.")
    parser.add_argument("--output", default=None, help="JSON results file (a .png plot next to it).")
    return parser.parse_args(argv)


def replot(path: str) -> None:
    """Redraws the plot of a results file (`python -c "import pretrain_million as m; m.replot('results.json')"`)."""
    plot(json.loads(Path(path).read_text()), Path(path).with_suffix(".png"))


def main(argv=None) -> dict:
    args = parse_args(argv)
    from realm_hf import (
        DataCollatorForInverseClozeTask,
        DataCollatorForRealmPreTraining,
        InverseClozeTaskArguments,
        RealmForPreTraining,
        RealmIndex,
        RealmRetriever,
        embed_corpus,
        prepare_ict_examples,
        tag_salient_spans,
        train_inverse_cloze_task,
        train_realm,
    )
    from realm_hf.demo.job import (
        DemoArguments,
        build_tokenizer,
        demo_config,
        held_out_split,
        make_fact_evaluator,
        reading_worlds,
        train_reading_warm_start,
    )
    from realm_hf.demo.synthetic import make_synthetic_knowledge
    from realm_hf.retrieval.corpus import tokenize_blocks

    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    timings, total = {}, Stopwatch.started()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)

    with Stopwatch(timings, "world_seconds"):
        knowledge = make_synthetic_knowledge(
            args.num_people, args.num_cities, seed=args.seed, name_pool_size=args.name_pool_size
        )
        demo = DemoArguments(output_dir=str(work), num_people=args.num_people, num_cities=args.num_cities,
                             seed=args.seed, retriever_learning_rate=args.retriever_learning_rate,
                             retriever_training=args.retriever_training, index_search=args.index_search,
                             rerank_candidates=args.rerank_candidates, num_candidates=args.num_candidates,
                             disable_tqdm=True)  # fmt: skip
        if args.ict_steps is not None:
            demo.ict_steps = args.ict_steps
        worlds = reading_worlds(demo, knowledge)
        first_world = next(worlds)
        vocabulary = knowledge.vocabulary()
        vocabulary += sorted(set(first_world.vocabulary()) - set(vocabulary))
        tokenizer = build_tokenizer(vocabulary, work / "tokenizer")
        corpus = tokenize_blocks(knowledge.documents, tokenizer)
        held_out = held_out_split(args.num_people, 0.1, args.seed)
        rng = np.random.default_rng(args.seed)
        people_docs = 2 * args.num_people
        stream_docs = [
            d for d in rng.choice(people_docs, args.stream_documents, replace=False).tolist() if d not in held_out
        ]
        stream = knowledge.documents.select(sorted(stream_docs))
        sentences = tag_salient_spans(stream, tokenizer).filter(lambda row: len(row["salient_spans"]) > 0)
        in_stream = set(stream_docs)
        facts = knowledge.facts.filter(lambda row: row["doc_id"] in in_stream).shuffle(seed=args.seed)
        facts = facts.select(range(args.num_eval_facts))
        held_out_facts = knowledge.facts.filter(lambda row: row["doc_id"] in held_out).shuffle(seed=args.seed)
        held_out_facts = held_out_facts.select(range(args.num_eval_facts))
        evaluate = make_fact_evaluator(tokenizer, facts, np.asarray(corpus["doc_id"]), held_out_facts)

    model = RealmForPreTraining(demo_config(tokenizer, demo))
    with Stopwatch(timings, "reading_seconds"):
        reading_history = train_reading_warm_start(
            model, tokenizer, __import__("itertools").chain([first_world], worlds), demo
        )
    with Stopwatch(timings, "ict_seconds"):
        ict_examples = prepare_ict_examples(stream, tokenizer)
        ict_collator = DataCollatorForInverseClozeTask(
            tokenizer, query_max_length=48, block_max_length=128, seed=args.seed
        )
        ict_args = InverseClozeTaskArguments(max_steps=demo.ict_steps, per_device_train_batch_size=demo.per_device_train_batch_size,
                                             learning_rate=demo.ict_learning_rate, seed=args.seed, disable_tqdm=True,
                                             output_dir=str(work))  # fmt: skip
        train_inverse_cloze_task(model, ict_examples, ict_collator, ict_args)

    with Stopwatch(timings, "initial_embedding_seconds"):
        embeddings = embed_corpus(
            model.embedder, corpus, tokenizer, batch_size=args.embed_batch_size, show_progress=False
        )
    with Stopwatch(timings, "initial_index_build_seconds"):
        index = RealmIndex.build(corpus, embeddings, args.index_factory, train_size=args.train_size,
                                 nprobe=args.nprobe, show_progress=False)  # fmt: skip
    del embeddings

    model.set_retriever(RealmRetriever(index, tokenizer))
    model.eval()
    with torch.no_grad():
        before = evaluate(model, model.retriever, 0)
    model.train()
    print(json.dumps({"before": before, **timings}), flush=True)

    torch.set_num_threads(1)  # the other core is the builder's (or, with no refresh, free)
    builder = None
    (work / "builder.log").touch()
    if args.export_steps > 0 and args.retriever_training != "query_side":
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        builder_log = open(work / "builder.log", "w")
        builder = subprocess.Popen(
            [sys.executable, "-c", "import logging, sys; logging.basicConfig(level=logging.INFO); "
             "from realm_hf.cli import main; sys.exit(main(sys.argv[1:]))", "index-builder", "--watch", str(work),
             "--poll-seconds", "2", "--batch-size", str(args.embed_batch_size), "--no-progress"],
            env=env, stdout=builder_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    train_args = replace(
        demo, max_steps=args.max_steps, warmup_steps=min(50, args.max_steps // 10), index_refresh_mode="external",
        index_refresh_steps=args.export_steps, eval_steps=args.eval_steps, save_steps=args.max_steps,
        save_submodels=False, final_index_refresh=False,
    )  # fmt: skip
    collator = DataCollatorForRealmPreTraining(tokenizer, masking=demo.masking, max_length=48, seed=args.seed)
    with Stopwatch() as training:
        history = train_realm(model, tokenizer, index, sentences, collator, train_args, eval_fn=evaluate)
    train_seconds = training.seconds
    eval_seconds = sum(r.get("eval_seconds", 0.0) for r in history)
    if builder is not None:
        builder.terminate()  # a build in progress when training ends is not needed
        builder.wait()
        builder_log.close()
    builds = [
        {"step": int(m.group(1)), "seconds": float(m.group(2))}
        for m in re.finditer(r"Published the index of step (\d+) in ([\d.]+)s", (work / "builder.log").read_text())
    ]
    evaluations = [r for r in history if "retrieval_accuracy" in r]
    logged = [r for r in history if "index_staleness" in r]
    fresh = {}
    if args.fresh_eval:
        torch.set_num_threads(2)
        with Stopwatch(timings, "fresh_eval_seconds"):
            embeddings = embed_corpus(model.embedder, corpus, tokenizer, batch_size=args.embed_batch_size,
                                      show_progress=False)  # fmt: skip
            fresh_index = RealmIndex.build(corpus, embeddings, args.index_factory, train_size=args.train_size,
                                           nprobe=args.nprobe, show_progress=False)  # fmt: skip
            del embeddings
            in_service = model.retriever
            model.set_retriever(RealmRetriever(fresh_index, tokenizer))
            model.eval()
            with torch.no_grad():
                fresh = evaluate(model, model.retriever, args.max_steps)
            model.set_retriever(in_service)
        print(json.dumps({"fresh_index": fresh}), flush=True)
    results = {
        "benchmark": "pretrain_million",
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "work_dir", "keep")},
        "documents": len(knowledge.documents),
        "blocks": len(corpus),
        "vocabulary": len(tokenizer),
        "stream_sentences": len(sentences),
        # Training wall clock without the periodic evaluations (reported apart, as eval_seconds).
        "timings": {
            **timings,
            "train_seconds": train_seconds - eval_seconds,
            "eval_seconds": eval_seconds,
            "total_seconds": total.elapsed,
        },  # fmt: skip
        "steps_per_second": args.max_steps / (train_seconds - eval_seconds),
        "builder_refreshes": builds,
        "builder_refresh_seconds_mean": float(np.mean([b["seconds"] for b in builds])) if builds else None,
        "index_staleness_mean": float(np.mean([r["index_staleness"] for r in logged])),
        "index_staleness_max": int(max(r["index_staleness"] for r in logged)),
        "peak_rss_mb_trainer": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # The builder's own peak RSS is not measured here: a forked child's ru_maxrss starts at the parent's.
        "reading_history": reading_history,
        "before": before,
        # After: against the corpus re-embedded by the final towers with --fresh-eval (what the retriever learned),
        # else through the index in service; `after_in_service` is always the latter.
        "after": fresh or {k: v for k, v in evaluations[-1].items() if k in before},
        "after_in_service": {k: v for k, v in evaluations[-1].items() if k in before},
        "evaluations": evaluations,
        "history": history,
    }
    write_results(args.output, results)
    if args.output:
        plot(results, Path(args.output).with_suffix(".png"))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: results[k] for k in ("before", "after", "steps_per_second", "builder_refreshes")}, indent=1))
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [0] + [r["step"] for r in results["evaluations"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, label in (("retrieval_accuracy", "top-1 retrieval"), ("held_out_retrieval_accuracy", "top-1 retrieval, held-out"),
                       ("eval_masked_lm_accuracy", "masked-LM accuracy"), ("held_out_masked_lm_accuracy", "masked-LM, held-out")):  # fmt: skip
        top.plot(steps, [results["before"][key]] + [r[key] for r in results["evaluations"]], marker="o", label=label)
    if results.get("after_in_service") is not None and results["after"] != results["after_in_service"]:
        for key, marker in (("retrieval_accuracy", "*"), ("held_out_retrieval_accuracy", "P")):
            top.plot([steps[-1]], [results["after"][key]], marker=marker, markersize=12, linestyle="",
                     label=f"{key.replace('_', ' ')}, re-embedded index")  # fmt: skip
    top.set_ylabel("accuracy")
    top.set_title(f"REALM pre-training over {results['documents']:,} documents (2 CPU cores)")
    logged = [r for r in results["history"] if "index_staleness" in r]
    bottom.plot([r["step"] for r in logged], [r["index_staleness"] for r in logged], color="gray")
    bottom.set_ylabel("index staleness (steps)")
    bottom.set_xlabel("REALM step")
    fig.legend(*top.get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
