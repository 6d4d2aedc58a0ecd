"""The on-disk format of a [`RealmIndex`]: its config (`index_config.json`) and the reading and writing of its files.

```
<directory>/
  index_config.json   RealmIndexConfig (JSON): sizes, metric, search parameters, embedder fingerprint, file names
  corpus/             the blocks: an Arrow dataset (`Dataset.save_to_disk`)
  embeddings.npy      float32 (num_blocks, dim), memory-mapped on load
  index.faiss         the FAISS index (approximate indexes only; exact search needs none)
```

No pickle anywhere: Arrow, JSON, `.npy` without objects, and FAISS's own format.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ..logging import get_logger
from ..version import __version__
from .search import check_faiss_index, faiss_error, import_faiss


logger = get_logger(__name__)

INDEX_CONFIG_NAME = "index_config.json"
CORPUS_DIR_NAME = "corpus"
EMBEDDINGS_NAME = "embeddings.npy"
FAISS_INDEX_NAME = "index.faiss"
#: The files a saved `RealmIndex` owns in a folder (what replacing an index deletes of the previous one).
INDEX_FILE_PATTERNS = [f"{CORPUS_DIR_NAME}/**", EMBEDDINGS_NAME, FAISS_INDEX_NAME, INDEX_CONFIG_NAME]
INDEX_FORMAT_VERSION = 1
#: The folder of a saved model (`save_realm`, `RealmRetriever.save_pretrained`) that holds its index.
INDEX_SUBFOLDER = "index"
#: The manifest of an index saved by several processes, one plain index directory per shard.
SHARDED_INDEX_MANIFEST = "sharded_index.json"
SHARDED_INDEX_FORMAT = "realm_hf.sharded_index"

# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RealmIndexConfig:
    """Description of a saved [`RealmIndex`], written as `index_config.json`.

    Args:
        dim (`int`):
            Embedding dimension.
        num_blocks (`int`):
            Number of blocks (rows of the corpus, of the embeddings and of the FAISS index).
        index_factory (`str`, *optional*, defaults to `"Flat"`):
            FAISS factory string the index was built with. `"Flat"` means exact search over the embeddings.
        metric (`str`, *optional*, defaults to `"inner_product"`):
            Always `"inner_product"` (maximum inner product search).
        nprobe (`int`, *optional*):
            Number of inverted lists visited per query by IVF indexes.
        hnsw_ef_search (`int`, *optional*):
            Search-time beam width of HNSW indexes (`efSearch`).
        refine_factor (`int`, *optional*):
            If > 1, approximate searches fetch `refine_factor * k` candidates and re-score them exactly with the
            stored embeddings.
        embedder_fingerprint (`str`, *optional*):
            [`compute_embedder_fingerprint`] of the model that embedded the blocks, to detect a stale index.
        realm_hf_version (`str`, *optional*):
            Version of `realm_hf` that wrote the index.
        format_version (`int`, *optional*, defaults to 1):
            Version of the on-disk layout.
        corpus_dir (`str`, *optional*, defaults to `"corpus"`):
            Relative path of the `datasets.save_to_disk` folder.
        embeddings_file (`str`, *optional*, defaults to `"embeddings.npy"`):
            Relative path of the float32 embedding matrix.
        index_file (`str`, *optional*):
            Relative path of the FAISS index (`None` for `"Flat"`, which searches the embeddings directly).
        file_sizes (`dict[str, int]`, *optional*):
            Byte size of each file, checked on load to catch truncated downloads.
    """

    dim: int
    num_blocks: int
    index_factory: str = "Flat"
    metric: str = "inner_product"
    nprobe: int | None = None
    hnsw_ef_search: int | None = None
    refine_factor: int | None = None
    embedder_fingerprint: str | None = None
    realm_hf_version: str = dataclasses.field(default_factory=lambda: __version__)
    format_version: int = INDEX_FORMAT_VERSION
    corpus_dir: str = CORPUS_DIR_NAME
    embeddings_file: str = EMBEDDINGS_NAME
    index_file: str | None = FAISS_INDEX_NAME
    file_sizes: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serializable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> RealmIndexConfig:
        """Build a config from a dict; unknown keys are ignored with a warning.

        Args:
            config_dict (`dict[str, Any]`):
                The content of an `index_config.json`.

        Returns:
            [`RealmIndexConfig`]
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config_dict) - names)
        if unknown:
            logger.warning("Ignoring unknown keys in %s: %s.", INDEX_CONFIG_NAME, unknown)
        missing = [n for n in ("dim", "num_blocks") if n not in config_dict]
        if missing:
            raise ValueError(f"{INDEX_CONFIG_NAME} is missing required key(s) {missing}.")
        return cls(**{k: v for k, v in config_dict.items() if k in names})

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write the config as indented JSON to `path`."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> RealmIndexConfig:
        """Read a config from the JSON file at `path`."""
        try:
            with open(path, encoding="utf-8") as f:
                config_dict = json.load(f)
        except FileNotFoundError as err:
            raise ValueError(f"{path} not found: this is not a saved RealmIndex directory.") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}).") from err
        if not isinstance(config_dict, dict):
            raise ValueError(f"{path} must contain a JSON object.")
        try:
            return cls.from_dict(config_dict)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err


# ----------------------------------------------------------------------------------------------------------------
# Helpers: files
# ----------------------------------------------------------------------------------------------------------------


def is_saved_index(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds a complete saved index: a plain one (its config) or a sharded one (its manifest)."""
    directory = Path(directory)
    return (directory / INDEX_CONFIG_NAME).is_file() or (directory / SHARDED_INDEX_MANIFEST).is_file()


def check_replaceable(target: Path) -> None:
    """Refuses to replace `target` unless it is absent, empty, or a saved (plain or sharded) index."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ValueError(f"{target} exists and is not a directory.")
    if any(target.iterdir()) and not is_saved_index(target):
        raise ValueError(
            f"{target} is a non-empty directory and not a saved index (no {INDEX_CONFIG_NAME} or "
            f"{SHARDED_INDEX_MANIFEST}); refusing to replace it. Save the index into its own (new or empty) directory."
        )


def read_sharded_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a sharded index directory (`shards`: `directory`, `start`, `end` of each), checked."""
    path = directory / SHARDED_INDEX_MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != SHARDED_INDEX_FORMAT:
        raise ValueError(f"{path} is not a realm_hf sharded index manifest.")
    return manifest


def write_corpus(corpus: datasets.Dataset, path: Path) -> None:
    corpus.save_to_disk(str(path))


def write_embeddings(embeddings: np.ndarray, path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, embeddings, allow_pickle=False)


def write_faiss_index(faiss_index: Any, path: Path) -> None:
    faiss = import_faiss()
    faiss.write_index(faiss_index, str(path))


def safe_join(directory: Path, relative: str) -> Path:
    """Join a relative file name from `index_config.json`, refusing absolute paths and `..`."""
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or not parts:
        raise ValueError(
            f"{directory / INDEX_CONFIG_NAME}: file name {relative!r} must be relative and inside the index directory."
        )
    return directory / relative


def check_file_sizes(directory: Path, config: RealmIndexConfig) -> None:
    for relative, expected in config.file_sizes.items():
        path = safe_join(directory, relative)
        if not path.is_file():
            raise ValueError(f"{path} is missing.")
        actual = path.stat().st_size
        if actual != expected:
            raise ValueError(f"{path} has {actual} bytes but {expected} were written: it is truncated or corrupt.")


def read_corpus(path: Path) -> datasets.Dataset:
    if not path.is_dir():
        raise ValueError(f"{path} (the corpus saved with `Dataset.save_to_disk`) is missing.")
    try:
        corpus = datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises several types for damaged folders
        raise ValueError(f"Could not load the corpus from {path}: {err}") from err
    if not isinstance(corpus, datasets.Dataset):
        raise ValueError(f"{path} holds a {type(corpus).__name__}, expected a single datasets.Dataset.")
    return corpus


def read_embeddings(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path} is missing.")
    try:
        embeddings = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"Could not read the embeddings from {path} (truncated or corrupt?): {err}") from err
    if embeddings.ndim != 2 or embeddings.dtype != np.float32:
        raise ValueError(f"{path} must hold a 2-D float32 array, got {embeddings.dtype} of shape {embeddings.shape}.")
    return embeddings


def read_faiss_index(path: Path, mmap: bool) -> Any:
    faiss = import_faiss()
    if not path.is_file():
        raise ValueError(f"{path} is missing.")
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as err:
        raise ValueError(f"Could not read the FAISS index {path} (truncated or corrupt?): {faiss_error(err)}") from err


def check_loaded(
    directory: Path, config: RealmIndexConfig, corpus: datasets.Dataset, embeddings: np.ndarray, faiss_index: Any
) -> None:
    if config.metric != "inner_product":
        raise ValueError(f"{directory / INDEX_CONFIG_NAME}: unsupported metric {config.metric!r}.")
    if len(corpus) != config.num_blocks:
        raise ValueError(
            f"{directory / config.corpus_dir} has {len(corpus)} rows but {INDEX_CONFIG_NAME} says {config.num_blocks}."
        )
    if embeddings.shape != (config.num_blocks, config.dim):
        raise ValueError(
            f"{directory / config.embeddings_file} has shape {embeddings.shape} but {INDEX_CONFIG_NAME} says "
            f"({config.num_blocks}, {config.dim})."
        )
    if faiss_index is not None:
        try:
            check_faiss_index(faiss_index, config.num_blocks, config.dim, name=str(directory / config.index_file))
        except ValueError as err:
            raise ValueError(f"{err} (see {INDEX_CONFIG_NAME})") from err
