"""The `realm-hf` command.

- `realm-hf` or `realm-hf pretrain`: REALM pre-training from random initialisation on the embedded synthetic corpus
  (no download), ending with a report of masked-LM loss and retrieval accuracy over the steps; with `--corpus`, on
  your own documents, from a REALM or BERT checkpoint (`--init_from`) or random weights.
- `realm-hf finetune`: open-domain QA fine-tuning of a `realm-hf pretrain` run's model on its world's questions,
  evaluated on questions about people held out of both pre-training and fine-tuning; the model is saved for `ask`.
- `realm-hf convert`: convert a checkpoint of the original transformers REALM to the realm_hf layout.
- `realm-hf ask MODEL "question" ...`: answers, scores and evidence, one JSON object per line.
- `realm-hf index MODEL CORPUS OUTPUT`: split documents into blocks, embed them with the model's document tower and
  save the knowledge index.
- `realm-hf index-builder --watch OUTPUT_DIR`: the separate index builder of a run with `index_refresh_mode="external"`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .file_utils import atomic_write_text
from .version import __version__


if TYPE_CHECKING:
    from .hub.model_card import RealmModelCardData

# The library's modules are imported by the commands that use them, so that `realm-hf --help` does not load torch.

_COMMAND_HELP = {
    "pretrain": "REALM pre-training: the demo on the embedded synthetic world, or your documents with --corpus.",
    "finetune": "Open-domain QA fine-tuning: any REALM checkpoint on your questions, or a `realm-hf pretrain` run.",
    "convert": "Convert a legacy REALM checkpoint.",
    "ask": "Answer questions with a REALM open-QA model (local dir or repo id).",
    "index": "Build a knowledge index: documents -> blocks -> document-tower embeddings -> RealmIndex on disk.",
    "index-builder": "The separate index builder: re-embed the corpus with each new document tower a training run "
    "exports.",
}


def _dataclass_from(args: argparse.Namespace, cls: type):
    """The arguments dataclass of a sub-command from its parsed options (the sub-parser adds `func`)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


def _add_pretrain_arguments(subparsers) -> None:
    from .demo.job import DemoArguments
    from .training.corpus_pretraining import CorpusArguments

    parser = subparsers.add_parser(
        "pretrain",
        dataclass_types=[DemoArguments, CorpusArguments],
        help=_COMMAND_HELP["pretrain"],
        description="REALM pre-training. Without --corpus: the embedded demo (a generated world of invented people, "
        "warm starts, REALM pre-training, a report of retrieval before / after), with the options below: every "
        "option of RealmPreTrainingArguments (so of TrainingArguments) with the demo's defaults, and the generated "
        "world's. With "
        "--corpus: your documents, from --init_from (a REALM or BERT checkpoint) or random weights, with the options "
        "of examples/pretrain_realm.py: the corpus and model options and every TrainingArguments option of "
        "RealmPreTrainingArguments (--gradient_accumulation_steps, --bf16, --optim, --save_steps, "
        "--resume_from_checkpoint latest, --report_to, ...); `realm-hf pretrain --corpus CORPUS --help` lists them.",
    )
    parser.set_defaults(func=_run_pretrain)


def _names_corpus(argv: list[str]) -> bool:
    return any(arg == "--corpus" or arg.startswith("--corpus=") for arg in argv)


def _given(args: argparse.Namespace, cls: type, names) -> list[str]:
    """The options among `names` set to something other than their default."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return [f"--{name}" for name in names if getattr(args, name) != defaults[name]]


def _run_pretrain(args: argparse.Namespace) -> int:
    from .demo.job import DemoArguments, run_demo
    from .training.corpus_pretraining import CorpusArguments

    demo_args = _dataclass_from(args, DemoArguments)
    corpus_only = _given(args, CorpusArguments, [f.name for f in dataclasses.fields(CorpusArguments)])
    if corpus_only:
        print(f"realm-hf pretrain: error: {', '.join(corpus_only)} only apply with --corpus.", file=sys.stderr)
        return 2
    report = run_demo(demo_args)
    summary = {
        k: report[k] for k in ("documents", "chance_retrieval_accuracy", "before", "after", "total_seconds", "steps")
    }
    print(json.dumps(summary, indent=2))
    print(f"Report written to {demo_args.output_dir}/report.json (plot: report.png).")
    return 0


def _run_pretrain_on_corpus(argv: list[str]) -> int:
    from .demo.job import check_hub_target
    from .hub.publish import publish_realm
    from .logging import disable_progress_bars
    from .training.corpus_pretraining import corpus_pretraining_parser, pretrain_on_corpus

    parser = corpus_pretraining_parser(prog="realm-hf pretrain --corpus CORPUS")
    corpus_args, model_args, train_args, unknown = parser.parse_args_into_dataclasses(
        argv, return_remaining_strings=True
    )
    if unknown:
        print(
            f"realm-hf pretrain: error: {' '.join(unknown)}: not options of pre-training on a corpus (the demo's "
            "world options describe the generated world); see `realm-hf pretrain --corpus CORPUS --help`.",
            file=sys.stderr,
        )
        return 2
    if train_args.disable_tqdm:
        disable_progress_bars()
    repo_id = train_args.hub_model_id or Path(train_args.output_dir).resolve().name
    if train_args.push_to_hub:
        check_hub_target(repo_id)  # before minutes of training, not after
    began = time.perf_counter()
    model, tokenizer, history = pretrain_on_corpus(corpus_args, model_args, train_args)
    report = {
        "corpus": corpus_args.corpus,
        "init_from": corpus_args.init_from,
        "blocks": len(model.retriever.index),
        "steps": train_args.max_steps,
        "total_seconds": time.perf_counter() - began,
        "last": history[-1] if history else None,
        "history": history,
    }
    if train_args.push_to_hub:
        card = _corpus_card(corpus_args, train_args, history)
        commit = publish_realm(model, tokenizer, model.retriever, repo_id=repo_id, card=card)
        report["hub_commit"] = commit.commit_url
    atomic_write_text(Path(train_args.output_dir) / "report.json", json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2))
    print(
        f"Model, tokenizer and index saved to {train_args.output_dir}/final; report: {train_args.output_dir}/report.json."
    )
    return 0


def _run_finetune_on_questions(argv: list[str]) -> int:
    """`realm-hf finetune MODEL --train_file Q.jsonl [--eval_file Q2.jsonl] [TrainingArguments options]`."""
    from .logging import disable_progress_bars
    from .training.question_finetuning import REPORT_FILE as FINETUNE_REPORT_FILE
    from .training.question_finetuning import finetune_on_questions, question_finetuning_parser

    if argv and not argv[0].startswith("-"):
        argv = ["--model_name_or_path", *argv]  # MODEL, positionally
    parser = question_finetuning_parser(prog="realm-hf finetune MODEL --train_file QUESTIONS")
    args, train_args, unknown = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    if unknown:
        print(
            f"realm-hf finetune: error: {' '.join(unknown)}: not options of fine-tuning on your questions (the demo's "
            "options describe its world); see `realm-hf finetune MODEL --train_file QUESTIONS --help`.",
            file=sys.stderr,
        )
        return 2
    if train_args.disable_tqdm:
        disable_progress_bars()
    report = finetune_on_questions(args, train_args)
    print(json.dumps({k: report[k] for k in ("num_train_questions", "global_step", "before", "after")}, indent=2))
    print(
        f"Model, tokenizer and index saved to {train_args.output_dir}; report: {train_args.output_dir}/{FINETUNE_REPORT_FILE}."
    )
    return 0


def _hub_id(name: str | None) -> str | None:
    """`name` when it names a Hub repository (not a local path): what a card's `base_model` / `datasets` take."""
    return None if name is None or Path(name).exists() else name


def _corpus_card(corpus_args, train_args, history: list[dict]) -> RealmModelCardData:
    """The card of a `pretrain --corpus` run: its base model and dataset (when they are Hub ids), its settings, its
    logs, and its last measured masked-LM accuracy as a `model-index` result on the corpus."""
    from .hub.model_card import pretraining_card_data, update_card_from_metrics

    card = pretraining_card_data(
        f"REALM pre-trained by `realm-hf pretrain --corpus` on {corpus_args.corpus} for {train_args.max_steps} steps "
        "(marginal masked-LM loss through retrieval).",
        train_args,
        history,
    )
    card.base_model = _hub_id(corpus_args.init_from)
    card.datasets = [name] if (name := _hub_id(corpus_args.corpus)) else []
    measured = [record for record in history if "masked_lm_accuracy" in record]
    if measured:
        metrics = {"masked_lm_accuracy": measured[-1]["masked_lm_accuracy"]}
        update_card_from_metrics(card, metrics, dataset_name=corpus_args.corpus, split=corpus_args.split)
    return card


def _add_finetune_arguments(subparsers) -> None:
    from .demo.openqa import FinetuneArguments

    parser = subparsers.add_parser(
        "finetune",
        dataclass_types=FinetuneArguments,
        help=_COMMAND_HELP["finetune"],
        description="Open-domain QA fine-tuning. With --train_file: `realm-hf finetune MODEL --train_file Q.jsonl "
        "[--eval_file Q2.jsonl]` fine-tunes MODEL (a RealmForOpenQA with its index, or a RealmForPreTraining "
        "checkpoint; a directory or Hub id) on your questions (JSON lines / JSON / CSV / Parquet, a datasets directory "
        "or a Hub dataset id, with question and answers or answer) with every TrainingArguments option; "
        "`realm-hf finetune MODEL --train_file Q --help` lists them. Without: the demo's fine-tuning of a "
        "`realm-hf pretrain` run on its world's questions (held-out evaluation), with the options below.",
    )
    parser.set_defaults(func=_run_finetune)


def _run_finetune(args: argparse.Namespace) -> int:
    from .demo.openqa import REPORT_FILE, FinetuneArguments, run_finetune

    finetune_args = _dataclass_from(args, FinetuneArguments)
    report = run_finetune(finetune_args)
    summary = {k: report[k] for k in ("init", "num_train_questions", "num_eval_questions", "before", "after")}
    print(json.dumps(summary, indent=2))
    print(f"Model, index and report ({REPORT_FILE}) saved to {finetune_args.output_dir}. Ask it a held-out question:")
    print(f'  realm-hf ask {finetune_args.output_dir} "{report["example_questions"][0]}"')
    return 0


def _add_ask_arguments(subparsers) -> None:
    parser = subparsers.add_parser(
        "ask",
        help=_COMMAND_HELP["ask"],
        description="Answers questions with a RealmForOpenQA and the index saved with it (a local directory or a Hub "
        "repository written by save_pretrained / push_to_hub / save_realm): one JSON line per question with the "
        "answer, its score and the evidence block.",
    )
    parser.add_argument("model", help="A directory or Hub repository holding a RealmForOpenQA and its index/.")
    parser.add_argument("questions", nargs="*", help="Questions (or use --questions-file).")
    parser.add_argument("--questions-file", default=None, help="A text file with one question per line.")
    parser.add_argument("--output", default=None, help="Write the JSON lines to this file instead of the screen.")
    parser.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="Blocks retrieved per question (default: the model's searcher_beam_size).",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="Questions per forward pass.")
    parser.add_argument(
        "--device",
        default=None,
        help="Device to answer on, e.g. 'cuda' (default: the CPU; under `accelerate launch` / torchrun each process "
        "answers a share of the questions on its own device, and the main one writes them in order).",
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of the model.")
    parser.add_argument("--allow-pickle", action="store_true", help="Read a legacy pickled block_records.npy.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    parser.set_defaults(func=_run_ask)


def _run_ask(args: argparse.Namespace) -> int:
    from .hub.publish import load_realm
    from .inference import answer_questions
    from .modeling_realm import RealmForOpenQA

    questions = list(args.questions)
    if args.questions_file:
        with open(args.questions_file, encoding="utf-8") as handle:
            questions.extend(line.rstrip("\n") for line in handle)
    if not questions:
        raise ValueError("give questions as arguments or with --questions-file.")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}.")
    model, tokenizer, retriever = load_realm(args.model, revision=args.revision, allow_pickle=args.allow_pickle)
    if not isinstance(model, RealmForOpenQA):
        raise ValueError(f"{args.model} holds a {type(model).__name__}; answering needs a RealmForOpenQA checkpoint.")
    if retriever is None or tokenizer is None:
        raise ValueError(f"{args.model} has no index or no tokenizer to answer from (expected index/ and vocab.txt).")
    model.set_retriever(retriever)
    if args.top_k is not None:
        model.config.searcher_beam_size = args.top_k
        model.config.reader_beam_size = min(model.config.reader_beam_size, args.top_k)
    accelerator = _distributed_accelerator()  # several processes: each answers a contiguous share of the questions
    if accelerator is not None:
        model.to(accelerator.device)
    elif args.device is not None:
        model.to(args.device)
    if accelerator is None:
        answers = answer_questions(
            model, tokenizer, questions, batch_size=args.batch_size, show_progress=not args.no_progress
        )
        rows = [answer.to_dict() for answer in answers]
    else:
        from accelerate.utils import gather_object

        with accelerator.split_between_processes(questions) as share:
            answers = answer_questions(
                model, tokenizer, share, batch_size=args.batch_size,
                show_progress=not args.no_progress and accelerator.is_main_process,
            )  # fmt: skip
        rows = gather_object([answer.to_dict() for answer in answers])  # in process order: the questions' order
    if accelerator is None or accelerator.is_main_process:
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        if args.output:
            atomic_write_text(args.output, "".join(f"{line}\n" for line in lines))
        else:
            print("\n".join(lines))
    _end_distributed(accelerator)
    return 0


def _add_index_arguments(subparsers) -> None:
    parser = subparsers.add_parser(
        "index",
        help=_COMMAND_HELP["index"],
    )
    parser.add_argument(
        "model",
        help="A REALM checkpoint with a document tower and its tokenizer (RealmEmbedder, RealmForPreTraining or "
        "RealmForOpenQA; a local directory or a Hub model id).",
    )
    parser.add_argument(
        "corpus",
        help="The documents: a JSON lines / JSON / CSV / Parquet file, a datasets directory (save_to_disk) or a Hub "
        "dataset id, with a text column and optionally a title column.",
    )
    parser.add_argument("output", help="The directory the index is saved to (RealmIndex.save_pretrained).")
    parser.add_argument("--split", default="train", help="Split of a Hub dataset or DatasetDict directory.")
    parser.add_argument("--text-column", default="text", help="Column with the documents' text.")
    parser.add_argument("--title-column", default="title", help="Column with their titles (empty when absent).")
    parser.add_argument(
        "--max-block-length",
        type=int,
        default=None,
        help="Longest block input, [CLS] title [SEP] block [SEP], in wordpieces (default: the model's block_seq_len).",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="Blocks per forward pass of the embedder.")
    parser.add_argument(
        "--index-factory",
        default="Flat",
        help="FAISS index_factory string: 'Flat' (exact search), or e.g. 'IVF4096,SQ8', 'HNSW32' for large corpora.",
    )
    parser.add_argument("--num-proc", type=int, default=None, help="Processes for splitting and tokenizing.")
    parser.add_argument(
        "--device",
        default=None,
        help="Device of the document tower, e.g. 'cuda' (default: the CPU; under `accelerate launch` / torchrun each "
        "process embeds a share of the blocks on its own device).",
    )
    parser.add_argument("--no-progress", action="store_true", help="No progress bars.")
    parser.set_defaults(func=_run_index)


def _distributed_accelerator():
    """An `Accelerator` when the command runs in several processes (`accelerate launch`, torchrun), else `None`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())  # CPU processes: gloo (MULTI_CPU), not one process each


def _end_distributed(accelerator) -> None:
    """Every process waits for the others (the main one may still be writing), then the process group is destroyed,
    so that no process exits while the others' collectives are still live."""
    if accelerator is not None:
        accelerator.wait_for_everyone()
        accelerator.end_training()


def _run_index(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from .hub.publish import load_document_embedder
    from .retrieval.index import build_index
    from .retrieval.search import check_index_factory
    from .training.corpus_pretraining import CorpusArguments, load_corpus

    accelerator = _distributed_accelerator()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    embedder = load_document_embedder(args.model)
    if accelerator is not None:
        embedder.to(accelerator.device)
    elif args.device is not None:
        embedder.to(args.device)
    check_index_factory(args.index_factory, embedder.config.retriever_proj_size)  # before the corpus is read
    corpus_args = CorpusArguments(
        corpus=args.corpus, tokenizer_name=args.model, split=args.split, text_column=args.text_column,
        title_column=args.title_column, num_proc=args.num_proc,
    )  # fmt: skip
    documents, blocks = load_corpus(
        corpus_args, tokenizer, max_block_length=args.max_block_length or embedder.config.block_seq_len
    )
    show_progress = not args.no_progress
    index = build_index(
        blocks, embedder, tokenizer, args.index_factory, batch_size=args.batch_size, accelerator=accelerator,
        show_progress=show_progress,
    )  # fmt: skip
    if accelerator is None or accelerator.is_main_process:
        index.save_pretrained(args.output)
        summary = {
            "documents": len(documents),
            "blocks": len(index),
            "dim": index.embedding_dim,
            "output": args.output,
        }
        print(json.dumps(summary, indent=2))
    _end_distributed(accelerator)
    return 0


def _add_index_builder_arguments(subparsers) -> None:
    parser = subparsers.add_parser(
        "index-builder",
        help=_COMMAND_HELP["index-builder"],
        description="Watches a REALM pre-training run with index_refresh_mode='external' (train_realm, "
        "examples/pretrain_realm.py): for each newest export of its document tower (OUTPUT_DIR/indexes/exports/"
        "step-N) it embeds the corpus and publishes OUTPUT_DIR/indexes/step-N, which the trainer swaps in. Run it on "
        "its own devices, on several with `torchrun --nproc_per_node N -m realm_hf.cli index-builder ...` (each embeds "
        "a share of the blocks); it stops when the run has written OUTPUT_DIR/final.",
    )
    parser.add_argument("--watch", required=True, metavar="OUTPUT_DIR", help="The training run's output_dir.")
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="How often to look for a new export.")
    parser.add_argument("--batch-size", type=int, default=128, help="Blocks per forward pass of the document tower.")
    parser.add_argument("--max-builds", type=int, default=None, help="Stop after this many indexes.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bars.")
    parser.set_defaults(func=_run_index_builder)


def _run_index_builder(args: argparse.Namespace) -> int:
    from .training.index_builder import run_index_builder

    accelerator = _distributed_accelerator()  # several processes: each embeds a share of the blocks
    built = run_index_builder(
        args.watch,
        poll_seconds=args.poll_seconds,
        batch_size=args.batch_size,
        max_builds=args.max_builds,
        show_progress=not args.no_progress,
        accelerator=accelerator,
    )
    if accelerator is None or accelerator.is_main_process:
        print(json.dumps({"built": built}))
    _end_distributed(accelerator)
    return 0


def _add_convert_arguments(subparsers) -> None:
    from .hub.convert import add_convert_arguments

    add_convert_arguments(subparsers)


_ADD_COMMAND = {
    "pretrain": _add_pretrain_arguments,
    "finetune": _add_finetune_arguments,
    "convert": _add_convert_arguments,
    "ask": _add_ask_arguments,
    "index": _add_index_arguments,
    "index-builder": _add_index_builder_arguments,
}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The `realm-hf` parser. Options of the plain sub-commands take both spellings (`--batch-size` and
    `--batch_size`), as the dataclass-backed ones (`pretrain`, `finetune`) do.

    Args:
        commands (`Iterable[str]`, *optional*):
            The sub-commands to build with their options (default: all). The others are listed with their one-line
            help only, which is all `realm-hf --help` shows, and need none of the library's heavy imports.
    """
    full = set(_ADD_COMMAND if commands is None else commands) & set(_ADD_COMMAND)
    parser = argparse.ArgumentParser(
        prog="realm-hf",
        description="REALM for transformers 5: pre-train, fine-tune, index, convert and ask. `realm-hf pretrain` runs "
        "the embedded demo; `realm-hf <command> --help` lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"realm-hf {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="Show the full traceback of an error (default: one line, exit code 2)."
    )
    parser_class = argparse.ArgumentParser
    if full & {"pretrain", "finetune"}:  # the options of a dataclass (transformers' parser imports torch)
        from transformers import HfArgumentParser

        parser_class = HfArgumentParser
    subparsers = parser.add_subparsers(dest="command", parser_class=parser_class, metavar="COMMAND")
    for name, add_command in _ADD_COMMAND.items():
        if name in full:
            add_command(subparsers)
        else:
            subparsers.add_parser(name, help=_COMMAND_HELP[name])
    for name, subparser in subparsers.choices.items():
        subparser.prog = f"realm-hf {name}"
        _accept_both_spellings(subparser)
    return parser


def _accept_both_spellings(parser: argparse.ArgumentParser) -> None:
    """Every `--long-option` also as `--long_option` and the reverse (what `HfArgumentParser` does for fields)."""
    for action in list(parser._actions):
        for option in list(action.option_strings):
            name = option[2:]
            if not option.startswith("--") or ("-" not in name and "_" not in name):
                continue
            other = "--" + (name.replace("-", "_") if "-" in name else name.replace("_", "-"))
            if other not in parser._option_string_actions:
                action.option_strings.append(other)
                parser._option_string_actions[other] = action


def _register() -> None:
    """What `import realm_hf` does outside this command (see the package's docstring): the Auto classes and the
    pipeline task, before a command loads a checkpoint."""
    from .auto_registration import register_realm

    register_realm()


def main(argv: list[str] | None = None) -> int:
    """The `realm-hf` command. Errors are one line, `realm-hf <command>: error: <message>`, with exit code 2 (the
    traceback with `--debug`); a bare `realm-hf` prints the help."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    parser = build_parser(argv[:1])  # only the command that runs is built with its options
    if not argv:
        parser.print_help()
        return 0
    command = argv[0]
    try:
        if command == "pretrain" and _names_corpus(argv[1:]):
            run = functools.partial(_run_pretrain_on_corpus, argv[1:])
        elif command == "finetune" and any(a.split("=")[0] in ("--train_file", "--train-file") for a in argv[1:]):
            run = functools.partial(_run_finetune_on_questions, argv[1:])
        else:
            args = parser.parse_args(argv)  # `--help` exits here, before anything heavy is imported
            if (
                getattr(args, "no_progress", False)
                or getattr(args, "disable_tqdm", False)
                or not getattr(args, "show_progress", True)
            ):
                from .logging import disable_progress_bars

                disable_progress_bars()  # one switch for every bar the command shows, datasets' and transformers' too
            run = functools.partial(args.func, args)
        _register()
        return run()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:
        if debug:
            raise
        kind = "" if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: "
        print(f"realm-hf {command}: error: {kind}{err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
