"""Evaluate a saved `RealmForOpenQA` and its index on an open-domain QA question set, batched; write a JSON report.

The model directory is what `realm_hf.save_realm` (or `examples/finetune_openqa.py`, `finetune_openqa_accelerate.py`)
writes: weights, tokenizer and the knowledge index in `index/` (a Hub repository id works too). Question files are
read with the loaders of `realm_hf.evaluation.qa_data`:

| `--dataset` | files | answers |
|---|---|---|
| `nq` | `NQ-open.dev.jsonl`, `topics.nq.test.txt`, `topics.dpr.nq.test.txt`, EfficientQA files | text |
| `webquestions` | `topics.dpr.wq.test.txt`, `brmson_main_test.json` | text |
| `curatedtrec` | `large2180-test.tsv`, `topics.dpr.curated.test.txt` | regular expressions |
| `squad` | `squad_v1.1_dev_qa.dev.jsonl` (SQuAD-open) | text |

    python examples/evaluate_openqa.py MODEL_DIR --dataset nq --questions ../shared/data/nq_open/NQ-open.dev.jsonl \
        --batch_size 32 --output nq_report.json

The report holds the metrics of `realm_hf.evaluate_open_qa` (exact match, F1, retrieval recall@1 / @k, and the counts
of empty, failed and unanswerable questions and of answer patterns that do not compile), the throughput, and with
`--save_predictions` every prediction. Bad questions do not stop the run: they are counted and listed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers.utils import logging

from realm_hf import load_realm
from realm_hf.evaluation.open_qa import evaluate_open_qa
from realm_hf.evaluation.qa_data import load_curatedtrec, load_nq_open, load_qa_file, load_webquestions


logger = logging.get_logger("evaluate_openqa")

LOADERS = {
    "nq": load_nq_open,
    "webquestions": load_webquestions,
    "curatedtrec": load_curatedtrec,
    "squad": lambda path: load_qa_file(path, answer_type="text", file_format="jsonl"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="Directory (or Hub id) of a RealmForOpenQA saved with its tokenizer and index.")
    parser.add_argument("--dataset", choices=sorted(LOADERS), required=True, help="Question-set format.")
    parser.add_argument("--questions", required=True, help="The question file.")
    parser.add_argument("--output", default="openqa_eval_report.json", help="JSON report to write.")
    parser.add_argument("--batch_size", type=int, default=16, help="Questions per forward pass.")
    parser.add_argument("--k", type=int, default=None, help="Retrieval depth of recall@k (default: reader beam).")
    parser.add_argument("--max_question_length", type=int, default=64, help="Questions are truncated to this.")
    parser.add_argument("--max_questions", type=int, default=None, help="Evaluate the first N questions only.")
    parser.add_argument("--save_predictions", action="store_true", help="Also write every prediction.")
    parser.add_argument("--allow_pickle", action="store_true", help="Allow a legacy block_records.npy (a pickle).")
    parser.add_argument("--device", default=None, help="e.g. cuda:0; default: cuda when available, else cpu.")
    return parser.parse_args(argv)


def load_questions(dataset: str, path: str, max_questions: int | None):
    """The question set as a `datasets.Dataset` (`question`, `answers`, `answer_type`), optionally truncated."""
    questions = LOADERS[dataset](path)
    if max_questions is not None:
        questions = questions.select(range(min(max_questions, len(questions))))
    return questions


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.set_verbosity_info()
    model, tokenizer, retriever = load_realm(args.model, allow_pickle=args.allow_pickle)
    if retriever is None or tokenizer is None:
        raise SystemExit(
            f"{args.model} has no index or no tokenizer: save it with realm_hf.save_realm(..., retriever)."
        )
    if not hasattr(model, "set_retriever"):
        raise SystemExit(f"{args.model} holds a {type(model).__name__}, not a RealmForOpenQA.")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    questions = load_questions(args.dataset, args.questions, args.max_questions)
    logger.info(f"Evaluating {args.model} on {len(questions)} {args.dataset} questions from {args.questions}.")

    start = time.perf_counter()
    result = evaluate_open_qa(
        model,
        tokenizer,
        questions,
        batch_size=args.batch_size,
        k=args.k,
        max_question_length=args.max_question_length,
        return_predictions=True,
    )
    seconds = time.perf_counter() - start
    predictions = result.pop("predictions")
    report = {
        "model": str(args.model),
        "dataset": args.dataset,
        "questions_file": Path(args.questions).name,
        "num_blocks": len(retriever.index),
        "batch_size": args.batch_size,
        "device": str(device),
        "seconds": seconds,
        "questions_per_s": len(questions) / seconds if seconds > 0 else None,
        "metrics": result,
        "failed_questions": [
            {"index": i, "question": p["question"], "error": p["error"]}
            for i, p in enumerate(predictions)
            if p["error"]
        ],
    }
    if args.save_predictions:
        report["predictions"] = predictions
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    logger.info(f"Wrote {output}: {json.dumps(result)}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
