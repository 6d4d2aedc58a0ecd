"""The `realm-hf` command.

- `realm-hf` or `realm-hf pretrain`: REALM pre-training from random initialisation on the embedded synthetic corpus
  (no download), ending with a report of masked-LM loss and retrieval accuracy over the steps.
- `realm-hf convert`: convert a checkpoint of the original transformers REALM to the realm_hf layout.
- `realm-hf ask MODEL "question" ...`: answers, scores and evidence, one JSON object per line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from transformers import HfArgumentParser

from .demo.job import DemoArguments, run_demo
from .hub.convert import add_convert_arguments
from .hub.publish import load_realm
from .inference import answer_questions


def _add_pretrain_arguments(subparsers) -> None:

    parser = subparsers.add_parser(
        "pretrain",
        dataclass_types=DemoArguments,
        help="REALM pre-training demo on the embedded synthetic corpus.",
    )
    parser.set_defaults(func=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:

    names = {f.name for f in dataclasses.fields(DemoArguments)}
    demo_args = DemoArguments(**{k: v for k, v in vars(args).items() if k in names})
    report = run_demo(demo_args)
    summary = {
        k: report[k] for k in ("documents", "chance_retrieval_accuracy", "before", "after", "total_seconds", "steps")
    }
    print(json.dumps(summary, indent=2))
    print(f"Report written to {demo_args.output_dir}/report.json (plot: report.png).")
    return 0


def _add_ask_arguments(subparsers) -> None:
    parser = subparsers.add_parser("ask", help="Answer questions with a REALM open-QA model (local dir or repo id).")
    parser.add_argument("model", help="A directory or Hub repository saved with realm_hf.save_realm / publish_realm.")
    parser.add_argument("questions", nargs="*", help="Questions (or use --questions-file).")
    parser.add_argument("--questions-file", default=None, help="A text file with one question per line.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--allow-pickle", action="store_true", help="Read a legacy pickled block_records.npy.")
    parser.set_defaults(func=_run_ask)


def _run_ask(args: argparse.Namespace) -> int:

    questions = list(args.questions)
    if args.questions_file:
        with open(args.questions_file, encoding="utf-8") as handle:
            questions.extend(line.rstrip("\n") for line in handle)
    if not questions:
        print("realm-hf ask: give questions as arguments or with --questions-file.", file=sys.stderr)
        return 2
    model, tokenizer, retriever = load_realm(args.model, revision=args.revision, allow_pickle=args.allow_pickle)
    if retriever is None or tokenizer is None:
        print(f"realm-hf ask: {args.model} has no index or tokenizer to answer from.", file=sys.stderr)
        return 2
    model.set_retriever(retriever)
    for answer in answer_questions(model, tokenizer, questions, batch_size=args.batch_size):
        print(json.dumps(answer.to_dict(), ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="realm-hf", description="REALM for transformers 5.")
    subparsers = parser.add_subparsers(dest="command", parser_class=HfArgumentParser)
    _add_pretrain_arguments(subparsers)
    add_convert_arguments(subparsers)
    _add_ask_arguments(subparsers)
    args = parser.parse_args(argv or ["pretrain"])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
