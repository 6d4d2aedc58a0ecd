r"""Convert checkpoints of the original transformers REALM (`google/realm-*`) into the `realm_hf` layout.

The original checkpoints store weights as `pytorch_model.bin` (a pickle, read here with torch's weights-only
unpickler), the corpus embeddings of `RealmForOpenQA` as a `block_emb` tensor inside the weights, and the corpus as
`block_records.npy`, a pickled numpy object array. The conversion writes the layout of [`realm_hf.hub.publish`]:
`model.safetensors` (without `block_emb` and without the `position_ids` buffers), `config.json`, the tokenizer files,
the knowledge index in `index/` (Arrow corpus + `embeddings.npy`, no pickle) and a model card. The output directory
is written atomically: into a temporary sibling directory first, which then replaces the target.

Command line (wired as `realm-hf convert`):

```bash
realm-hf convert google/realm-orqa-nq-openqa ./realm-orqa-nq-openqa --allow-pickle
python -m realm_hf.hub.convert ./legacy_checkpoint ./converted
```
"""

from __future__ import annotations

import argparse
import copy
import logging as std_logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..logging import get_logger
from ..retrieval.index import RealmIndex
from ..retrieval.legacy import LEGACY_BLOCK_RECORDS_NAME, load_legacy_block_emb
from ..retrieval.storage import resolve_directory
from .model_card import RealmModelCardData
from .publish import IGNORED_DOWNLOADS, load_tokenizer_in, model_class_in, save_realm


logger = get_logger(__name__)


def convert_legacy_checkpoint(
    source_dir_or_repo: str | os.PathLike,
    output_dir: str | os.PathLike,
    allow_pickle: bool = False,
    block_records: str | os.PathLike | None = None,
    overwrite: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    card_data: RealmModelCardData | None = None,
) -> Path:
    r"""
    Converts a checkpoint of the original transformers REALM into the `realm_hf` layout.

    Any REALM class loads (`RealmForOpenQA`, `RealmReader`, `RealmEmbedder`, `RealmScorer`,
    `RealmKnowledgeAugEncoder`): the class is taken from `config.architectures`. The knowledge index is converted only
    for `RealmForOpenQA` checkpoints with a `block_records.npy`, and only with `allow_pickle=True`, because that file
    is a pickle. Without the opt-in the index is skipped with a warning, unless `block_records` was passed
    explicitly, which is then an error.

    Args:
        source_dir_or_repo (`str` or `os.PathLike`):
            A checkpoint directory (`pytorch_model.bin` or `model.safetensors`, `config.json`, `vocab.txt`, ...) or
            a Hub repo id such as `"google/realm-orqa-nq-openqa"`.
        output_dir (`str` or `os.PathLike`):
            Where to write the converted checkpoint.
        allow_pickle (`bool`, *optional*, defaults to `False`):
            Allow unpickling `block_records.npy` (only for files you trust).
        block_records (`str` or `os.PathLike`, *optional*):
            Path of the `block_records.npy` to convert; defaults to the one in the checkpoint, if any.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace a non-empty `output_dir`.
        revision (`str`, *optional*):
            Revision of a Hub source.
        token (`str` or `bool`, *optional*):
            Hub token for a private source.
        card_data ([`RealmModelCardData`], *optional*):
            Card content; by default a card naming the source is generated.

    Returns:
        `Path`: the output directory.

    Raises:
        `FileExistsError`: if `output_dir` is not empty and `overwrite=False`.
        `ValueError`: if `block_records` was passed without `allow_pickle=True`, or cannot be converted.
    """
    output_dir = Path(output_dir).expanduser().absolute()
    _check_output_dir(output_dir, overwrite)
    explicit_records = block_records is not None
    if explicit_records and not allow_pickle:
        raise ValueError(
            f"{block_records} is a legacy REALM block_records.npy, a pickled numpy array: unpickling can execute "
            "arbitrary code. Pass allow_pickle=True (`--allow-pickle`) if you trust the file."
        )
    source_dir = resolve_directory(
        source_dir_or_repo, revision=revision, token=token, ignore_patterns=IGNORED_DOWNLOADS
    )
    model_class = model_class_in(source_dir)
    model = model_class.from_pretrained(source_dir, weights_only=True)
    tokenizer = load_tokenizer_in(source_dir)
    records_path = Path(block_records) if explicit_records else source_dir / LEGACY_BLOCK_RECORDS_NAME
    index = _convert_index(source_dir, records_path, tokenizer, allow_pickle, explicit_records)

    card_data = RealmModelCardData() if card_data is None else copy.deepcopy(card_data)
    is_hub_source = not Path(os.fspath(source_dir_or_repo)).expanduser().is_dir()
    if card_data.model_name is None and card_data.model_id is None:
        card_data.model_name = output_dir.name
    if card_data.base_model is None and is_hub_source:
        card_data.base_model = os.fspath(source_dir_or_repo)
    if card_data.model_description is None:
        card_data.model_description = (
            f"Converted from the original transformers REALM checkpoint `{os.fspath(source_dir_or_repo)}` with "
            "`realm_hf.hub.convert` (weights as safetensors, corpus as a pickle-free `RealmIndex`)."
        )

    save_realm(output_dir, model, tokenizer, index, card=card_data, replace=True)
    logger.info(
        f"Converted {source_dir_or_repo} ({model_class.__name__}"
        f"{f', {len(index)} blocks' if index is not None else ', no index'}) to {output_dir}."
    )
    return output_dir


def _convert_index(
    source_dir: Path, records_path: Path, tokenizer: Any, allow_pickle: bool, explicit: bool
) -> Any | None:

    if not records_path.is_file():
        if explicit:
            raise FileNotFoundError(f"block_records file {records_path} does not exist.")
        return None
    if not allow_pickle:
        logger.warning(
            f"{records_path} is a legacy block_records.npy, a pickled numpy array; it was NOT converted (the output "
            "has no index). If you trust the file, run again with allow_pickle=True (`--allow-pickle`)."
        )
        return None
    if tokenizer is None:
        message = f"{source_dir} has no tokenizer files, which are needed to pre-tokenize {records_path}."
        if explicit:
            raise ValueError(message)
        logger.warning(message + " The index was not converted.")
        return None
    try:
        block_emb = load_legacy_block_emb(source_dir)
    except KeyError as err:
        message = f"Cannot convert {records_path}: {err.args[0]}"
        if explicit:
            raise ValueError(message) from err
        logger.warning(message + " The index was not converted.")
        return None
    return RealmIndex.from_legacy(records_path, block_emb, tokenizer, allow_pickle=True, show_progress=False)


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a directory.")
    if any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} is not empty; pass overwrite=True (`--overwrite`) to replace it.")


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------

_DESCRIPTION = (
    "Convert a checkpoint of the original transformers REALM (google/realm-*: pytorch_model.bin, vocab.txt, "
    "block_records.npy) into the realm_hf layout (model.safetensors, tokenizer, index/ without pickle, README.md)."
)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="Checkpoint directory or Hub repo id (e.g. google/realm-orqa-nq-openqa).")
    parser.add_argument("output_dir", help="Directory to write the converted checkpoint to.")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="Unpickle block_records.npy to convert the knowledge index (only for files you trust).",
    )
    parser.add_argument("--block-records", default=None, help="Path of block_records.npy (default: the source's).")
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty output directory.")
    parser.add_argument("--revision", default=None, help="Revision of a Hub source.")
    parser.add_argument("--token", default=None, help="Hub token for a private source.")


def add_convert_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the `convert` sub-command to the `subparsers` of a CLI (`parser.add_subparsers()`).

    The sub-command's `func` default is [`run_convert`]: call `args.func(args)` after parsing.

    Returns:
        `argparse.ArgumentParser`: the sub-command's parser.
    """
    parser = subparsers.add_parser("convert", help="Convert a legacy REALM checkpoint.", description=_DESCRIPTION)
    _add_arguments(parser)
    parser.set_defaults(func=run_convert)
    return parser


def run_convert(args: argparse.Namespace) -> int:
    """Runs the conversion for parsed `convert` arguments.

    Returns:
        `int`: the exit status (0 on success, 1 when the conversion is refused or fails on bad input).
    """
    try:
        output_dir = convert_legacy_checkpoint(
            args.source,
            args.output_dir,
            allow_pickle=args.allow_pickle,
            block_records=args.block_records,
            overwrite=args.overwrite,
            revision=args.revision,
            token=args.token,
        )
    except (ValueError, OSError) as err:
        logger.error(f"realm-hf convert: {err}")
        return 1
    print(output_dir)  # the CLI's result, for scripts
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m realm_hf.hub.convert SOURCE OUTPUT_DIR [--allow-pickle] ...`."""
    parser = argparse.ArgumentParser(prog="realm-hf convert", description=_DESCRIPTION)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    if not std_logging.getLogger().handlers:
        std_logging.basicConfig(level=std_logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_convert(args)


if __name__ == "__main__":
    sys.exit(main())
