"""The `realm-hf` command.

- `realm-hf` or `realm-hf pretrain`: REALM pre-training from random initialisation on the embedded synthetic corpus
  (no download), ending with a report of masked-LM loss and retrieval accuracy over the steps.
- `realm-hf convert`: convert a checkpoint of the original transformers REALM to the realm_hf layout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from transformers import HfArgumentParser


def _add_pretrain_arguments(subparsers) -> None:
    from .demo import DemoArguments

    parser = subparsers.add_parser(
        "pretrain",
        dataclass_types=DemoArguments,
        help="REALM pre-training demo on the embedded synthetic corpus.",
    )
    parser.set_defaults(func=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:
    from .demo import DemoArguments, run_demo

    names = {f.name for f in dataclasses.fields(DemoArguments)}
    demo_args = DemoArguments(**{k: v for k, v in vars(args).items() if k in names})
    report = run_demo(demo_args)
    summary = {k: report[k] for k in ("documents", "chance_retrieval_accuracy", "before", "after", "seconds", "steps")}
    print(json.dumps(summary, indent=2))
    print(f"Report written to {demo_args.output_dir}/report.json (plot: report.png).")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .convert import add_convert_arguments

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="realm-hf", description="REALM for transformers 5.")
    subparsers = parser.add_subparsers(dest="command", parser_class=HfArgumentParser)
    _add_pretrain_arguments(subparsers)
    add_convert_arguments(subparsers)
    args = parser.parse_args(argv or ["pretrain"])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
