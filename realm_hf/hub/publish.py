r"""Publishing REALM checkpoints to the Hugging Face Hub, and loading them back.

**Layout.** A trained REALM is published as *one model repository* that holds everything needed to answer questions:

```
<user>/<model>                        (repo_type="model")
├── README.md                         model card: `library_name: realm_hf`, tags, `model-index` (realm_hf.hub.model_card)
├── config.json                       RealmConfig; `architectures` names the class load_realm instantiates
├── model.safetensors                 the weights (sharded as model-0000i-of-0000n.safetensors + index when large)
├── tokenizer.json                    tokenizer files (tokenizer_config.json, vocab.txt, ... as written by
├── tokenizer_config.json             `tokenizer.save_pretrained`)
└── index/                            RealmIndex.save_pretrained: relative paths only, no pickle
    ├── index_config.json
    ├── embeddings.npy                float32 block embeddings (memory-mapped on load)
    ├── index.faiss                   only for approximate (non-"Flat") indexes
    └── corpus/                       pre-tokenized blocks (`datasets.Dataset.save_to_disk`, Arrow)
```

`RealmIndex.from_pretrained(repo_id, repo_type="model", subfolder="index")` loads the index alone from such a
repository. A [`RealmIndex`] can also be published on its own, at the root of a *dataset* repository, with
[`push_index_to_hub`]; `RealmIndex.from_pretrained(repo_id)` loads it.

[`publish_realm`] writes the whole layout into a temporary folder and uploads it with a single
`HfApi.upload_folder` call, so the model card written here is the one that ends up on the Hub (transformers'
`push_to_hub` would replace `README.md` with its own card). Files whose content did not change are skipped by
`huggingface_hub`, and re-publishing an unchanged model creates no commit. Without `hf_xet` (or with
`HF_HUB_DISABLE_XET=1`) the upload is exactly one commit; with Xet, `huggingface_hub` may split very large folders
into several commits.

[`load_realm`] also reads the layouts of the original transformers checkpoints (`google/realm-*`:
`pytorch_model.bin`, `vocab.txt` and, for `RealmForOpenQA`, `block_records.npy` plus the `block_emb` tensor in the
weights). `block_records.npy` is a pickle and is only read with `allow_pickle=True`; `realm-hf convert`
([`realm_hf.hub.convert.convert_legacy_checkpoint`]) turns such a checkpoint into the layout above once and for all.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, DatasetCard, DatasetCardData, ModelCard
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .. import modeling_realm
from ..configuration_realm import RealmConfig
from ..file_utils import atomic_directory, atomic_write_text
from ..logging import get_logger
from ..modeling_realm import RealmPreTrainedModel
from ..retrieval.index import RealmIndex
from ..retrieval.retriever import INDEX_SUBFOLDER, RealmRetriever, load_retriever_for
from ..retrieval.storage import check_upload_target, resolve_directory, upload_folder
from ..run_layout import FINAL_DIR, SUBMODELS_DIR
from .model_card import RealmModelCardData, generate_model_card


INDEX_CARD_TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "index_card.md"


logger = get_logger(__name__)

CONFIG_NAME = "config.json"
README_NAME = "README.md"
DEFAULT_COMMIT_MESSAGE = "Upload REALM model with realm_hf"
DEFAULT_INDEX_COMMIT_MESSAGE = "Upload REALM knowledge index with realm_hf"

_WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")
_LEGACY_WEIGHTS_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
# Remote files a publish owns: stale ones (an index.faiss after switching to "Flat", old weight shards) are deleted
# in the same commit. Files a publish writes again are not deleted, they are updated (or skipped when unchanged).
_MODEL_REPO_OWNED_FILES = [f"{INDEX_SUBFOLDER}/**", "model*.safetensors", "model.safetensors.index.json"]
# Weights of other frameworks in the legacy `google/realm-*` repositories; never needed.
IGNORED_DOWNLOADS = ["*.h5", "*.msgpack", "*.ckpt*", "*.onnx", "*.tflite", "*.ot", "tf_model*", "flax_model*"]


# ---------------------------------------------------------------------------------------------------------------------
# Saving the layout locally
# ---------------------------------------------------------------------------------------------------------------------


def save_realm(
    save_directory: str | os.PathLike,
    model: RealmPreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    retriever_or_index: RealmRetriever | RealmIndex | None = None,
    card: ModelCard | RealmModelCardData | str | None = None,
    repo_id: str | None = None,
    replace: bool = False,
) -> Path:
    r"""
    Writes the one-repository layout (see the module docstring) into a local directory.

    Args:
        save_directory (`str` or `os.PathLike`):
            Target directory; created if missing. Files of the layout already present are overwritten.
        model ([`RealmPreTrainedModel`]):
            The model (saved with `save_pretrained(..., save_original_format=False)`: current key names only).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The tokenizer; defaults to the retriever's.
        retriever_or_index ([`RealmRetriever`] or [`RealmIndex`], *optional*):
            The knowledge index, saved in `index/`; defaults to `model.retriever` when the model has one.
        card (`ModelCard`, [`RealmModelCardData`] or `str`, *optional*):
            The model card: a `huggingface_hub.ModelCard`, card data to render, or the README.md text. By default a
            card is generated from the model and the index.
        repo_id (`str`, *optional*):
            The Hub id the folder is meant for (used in the generated card's usage snippet).
        replace (`bool`, *optional*, defaults to `False`):
            Write everything into a staging directory next to `save_directory` and swap it in as a whole once
            complete: a process killed while saving leaves the previous directory (or none), never a partial one.
            Files of an existing `save_directory` outside the layout are not kept.

    Returns:
        `Path`: the directory.
    """
    save_directory = Path(save_directory)
    if replace:
        with atomic_directory(save_directory) as staging:
            save_realm(staging, model, tokenizer, retriever_or_index, card=card, repo_id=repo_id)
        return save_directory
    index, tokenizer = _resolve_index_and_tokenizer(model, tokenizer, retriever_or_index)
    save_directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(save_directory, save_original_format=False, save_retriever=False)  # the index: below
    if tokenizer is not None:
        tokenizer.save_pretrained(save_directory)
    else:
        logger.warning("No tokenizer given: the published model will have no tokenizer files.")
    if index is not None:
        index.save_pretrained(save_directory / INDEX_SUBFOLDER)
    content = _card_content(card, model, index, repo_id)
    atomic_write_text(save_directory / README_NAME, content)  # a previous card stays whole if this fails
    return save_directory


def save_final_model(
    output_dir: str | os.PathLike,
    model: RealmPreTrainedModel,
    tokenizer,
    retriever,
    card: RealmModelCardData | None = None,
    save_submodels: bool = True,
) -> Path:
    r"""
    Saves a pre-trained model the Hugging Face way at the end of training (call it from one process):
    `output_dir/final` holds the `save_pretrained` weights and config, the tokenizer, the retriever's index and a model
    card, written atomically, and loads with `AutoModelForPreTraining.from_pretrained` and
    [`load_realm`]; with `save_submodels`, `output_dir/submodels` holds the embedder, encoder
    and scorer in the layout of the published `google/realm-cc-news-pretrained-*` checkpoints
    ([`RealmForPreTraining.save_submodels`]).

    Returns:
        `Path`: the `final` directory.
    """
    final = Path(output_dir) / FINAL_DIR
    save_realm(final, model, tokenizer, retriever, card=card, replace=True)
    if save_submodels:
        model.save_submodels(Path(output_dir) / SUBMODELS_DIR, tokenizer)
    logger.info(f"Saved the trained model, tokenizer, index and model card to {final}.")
    return final


# ---------------------------------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------------------------------


def publish_realm(
    model: RealmPreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    retriever_or_index: RealmRetriever | RealmIndex | None = None,
    *,
    repo_id: str,
    card: ModelCard | RealmModelCardData | str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    commit_description: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    private: bool | None = None,
    token: str | None = None,
) -> CommitInfo:
    r"""
    Publishes a REALM model, its tokenizer, its knowledge index and its model card to one Hub model repository, in
    one `upload_folder` commit.

    The repository is created if needed. Unchanged files are not uploaded again, and publishing an unchanged model
    creates no commit (the returned `CommitInfo` then points at the current head). Remote files of the layout that
    the new version no longer has (an `index/index.faiss` after switching to exact search, old weight shards) are
    deleted in the same commit; other files of the repository are left alone.

    Args:
        model ([`RealmPreTrainedModel`]):
            The model, for example a trained [`RealmForOpenQA`].
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The tokenizer; defaults to the retriever's.
        retriever_or_index ([`RealmRetriever`] or [`RealmIndex`], *optional*):
            The knowledge index, published in `index/`; defaults to `model.retriever`.
        repo_id (`str`):
            Target repository, `"namespace/name"` (or `"name"` for the token's user).
        card (`ModelCard`, [`RealmModelCardData`] or `str`, *optional*):
            The model card: a `huggingface_hub.ModelCard`, card data to render, or the README.md text. By default a
            card is generated from the model and the index (see [`realm_hf.hub.model_card.generate_model_card`]).
        commit_message (`str`, *optional*):
            Commit title.
        commit_description (`str`, *optional*):
            Commit description (the pull request description with `create_pr=True`).
        revision (`str`, *optional*):
            Branch to publish to (created from `main` if it does not exist). Defaults to `main`.
        create_pr (`bool`, *optional*, defaults to `False`):
            Open a pull request against `main` instead of committing to it.
        private (`bool`, *optional*):
            Visibility of the repository when it is created (an existing repository keeps its visibility).
        token (`str`, *optional*):
            Hub token with write access; defaults to the logged-in token (`hf auth login` or `HF_TOKEN`).

    Returns:
        `huggingface_hub.CommitInfo`: the commit (`oid`, `commit_url`, and `pr_url` / `pr_revision` for a PR).

    Raises:
        `ValueError`: if `repo_id` is malformed, or if `create_pr=True` is combined with a branch.
        `huggingface_hub.errors.LocalTokenNotFoundError`: if no token is available.
        `huggingface_hub.errors.HfHubHTTPError`: if the Hub refuses a request; nothing is committed by a failed
            commit, so calling `publish_realm` again retries.

    Example:

    ```python
    >>> from realm_hf.hub.publish import load_realm, publish_realm
    >>> commit = publish_realm(model, tokenizer, retriever, repo_id="me/realm-nq", card=card_data)
    >>> model, tokenizer, retriever = load_realm("me/realm-nq")
    ```
    """
    repo_id, token = check_upload_target(repo_id, revision, create_pr, token)  # before the model is written out
    with tempfile.TemporaryDirectory(prefix="realm_hf-publish-") as tmp:
        folder = save_realm(tmp, model, tokenizer, retriever_or_index, card=card, repo_id=repo_id)
        return upload_folder(
            folder,
            repo_id,
            repo_type="model",
            delete_patterns=_MODEL_REPO_OWNED_FILES,
            commit_message=commit_message,
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
            private=private,
            token=token,
        )


def push_index_to_hub(
    index: RealmIndex | RealmRetriever,
    repo_id: str,
    *,
    card: DatasetCard | str | None = None,
    commit_message: str = DEFAULT_INDEX_COMMIT_MESSAGE,
    commit_description: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    private: bool | None = None,
    token: str | None = None,
) -> CommitInfo:
    r"""
    Publishes a [`RealmIndex`] alone, at the root of a Hub *dataset* repository, in one commit.

    Load it back with `RealmIndex.from_pretrained(repo_id)` (the default `repo_type` is `"dataset"`).

    Args:
        index ([`RealmIndex`] or [`RealmRetriever`]):
            The index (or a retriever, whose index is published).
        repo_id (`str`):
            Target dataset repository, `"namespace/name"`.
        card (`huggingface_hub.DatasetCard` or `str`, *optional*):
            The dataset card (README.md); by default a short card with the index statistics.
        commit_message, commit_description, revision, create_pr, private, token:
            As for [`publish_realm`].

    Returns:
        `huggingface_hub.CommitInfo`
    """
    if isinstance(index, RealmRetriever):
        index = index.index
    if isinstance(card, DatasetCard):
        card = card.content
    return index.push_to_hub(
        repo_id, repo_type="dataset", card=card if card is not None else _index_card(index, repo_id),
        commit_message=commit_message, commit_description=commit_description, revision=revision,
        create_pr=create_pr, private=private, token=token,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def load_realm(
    repo_id_or_path: str | os.PathLike,
    revision: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    allow_pickle: bool = False,
    cache_dir: str | os.PathLike | None = None,
    mmap: bool = True,
    allow_stale_index: bool = False,
    **model_kwargs: Any,
) -> tuple[RealmPreTrainedModel, PreTrainedTokenizerBase | None, RealmRetriever | None]:
    r"""
    Loads a REALM model, its tokenizer and its retriever from a Hub repository or a local directory.

    The repository is downloaded with `huggingface_hub.snapshot_download` (so it also works from the cache with
    `HF_HUB_OFFLINE=1` or `local_files_only=True`). The model class is the one named in `config.architectures`
    ([`RealmForOpenQA`], [`RealmEmbedder`], [`RealmReader`], ...); the index in `index/` is memory-mapped, wrapped in a
    [`RealmRetriever`], and set on models that use one ([`RealmForOpenQA`], [`RealmForPreTraining`]).

    Checkpoints of the original transformers REALM (`pytorch_model.bin`, `vocab.txt`, `block_records.npy`) load too:
    the weights with the weights-only unpickler, and the corpus from `block_records.npy` (a pickle) only when
    `allow_pickle=True`; otherwise the retriever is `None` and a message explains the opt-in.

    Args:
        repo_id_or_path (`str` or `os.PathLike`):
            A local directory, or a Hub model repository id.
        revision (`str`, *optional*):
            Branch, tag, commit or `refs/pr/N` of the repository.
        token (`str` or `bool`, *optional*):
            Hub token (for private repositories).
        local_files_only (`bool`, *optional*, defaults to `False`):
            Only use the local Hub cache.
        allow_pickle (`bool`, *optional*, defaults to `False`):
            Allow reading a legacy `block_records.npy` (a pickle: only for files you trust).
        cache_dir (`str` or `os.PathLike`, *optional*):
            Hub cache directory.
        mmap (`bool`, *optional*, defaults to `True`):
            Memory-map the index files instead of reading them into memory.
        allow_stale_index (`bool`, *optional*, defaults to `False`):
            For a model with a document tower ([`RealmForPreTraining`]): load an index that another document tower
            embedded (its recorded fingerprint differs), with a warning, instead of refusing it.
        model_kwargs:
            Passed to the model's `from_pretrained` (for example `attn_implementation`, `dtype`).

    Returns:
        `tuple`: `(model, tokenizer, retriever)`; `tokenizer` is `None` when the repository has no tokenizer files,
        `retriever` when it has no index (or a legacy one without `allow_pickle=True`).

    Raises:
        `ValueError`: if `repo_id_or_path` is neither a directory nor a valid repo id, or is not a REALM checkpoint.
    """
    directory = resolve_directory(
        repo_id_or_path,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        ignore_patterns=IGNORED_DOWNLOADS,
    )
    model_class = model_class_in(directory)
    if _is_legacy(directory):
        logger.info(f"{repo_id_or_path} has the legacy transformers REALM layout (pytorch_model.bin).")
        model_kwargs.setdefault("weights_only", True)
    model = model_class.from_pretrained(directory, load_retriever=False, **model_kwargs)
    tokenizer = load_tokenizer_in(directory)
    retriever = load_retriever_for(
        model,
        directory,
        tokenizer=tokenizer,
        allow_pickle=allow_pickle,
        allow_stale_index=allow_stale_index,
        mmap=mmap,
    )
    if retriever is not None and hasattr(model, "set_retriever"):
        model.set_retriever(retriever)
    return model, tokenizer, retriever


_DOCUMENT_TOWER_OWNERS = {
    cls.__name__: cls
    for cls in (modeling_realm.RealmEmbedder, modeling_realm.RealmForPreTraining, modeling_realm.RealmForOpenQA)
}


def load_document_embedder(name_or_path: str | os.PathLike, **kwargs) -> modeling_realm.RealmEmbedder:
    """The document tower of a REALM checkpoint, to embed a corpus with.

    A `RealmEmbedder` checkpoint is the tower itself; of a `RealmForPreTraining` or `RealmForOpenQA` checkpoint the
    `embedder` is taken (for pre-training, the document tower the index was built with).

    Args:
        name_or_path (`str` or `os.PathLike`): A local directory or a Hub model id.
        kwargs: Passed to `from_pretrained` (`revision`, `token`, ...).

    Raises:
        `ValueError`: if the checkpoint is of a REALM class without a document embedder.
    """
    config = RealmConfig.from_pretrained(name_or_path, **kwargs)
    architecture = (config.architectures or ["RealmEmbedder"])[0]
    model_class = _DOCUMENT_TOWER_OWNERS.get(architecture)
    if model_class is None:
        raise ValueError(
            f"{name_or_path} is a {architecture} checkpoint; a corpus is embedded by a RealmEmbedder, or the embedder "
            "of a RealmForPreTraining or RealmForOpenQA checkpoint."
        )
    model = model_class.from_pretrained(name_or_path, **kwargs)
    return (model if model_class is modeling_realm.RealmEmbedder else model.embedder).eval()


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


def _resolve_index_and_tokenizer(
    model: Any, tokenizer: PreTrainedTokenizerBase | None, retriever_or_index: Any
) -> tuple[RealmIndex | None, PreTrainedTokenizerBase | None]:
    if retriever_or_index is None:
        retriever_or_index = getattr(model, "retriever", None)
    if isinstance(retriever_or_index, RealmRetriever):
        if tokenizer is None:
            tokenizer = retriever_or_index.tokenizer
        elif tokenizer.get_vocab() != retriever_or_index.tokenizer.get_vocab():
            logger.warning(
                "The tokenizer differs from the retriever's (another vocabulary): the index's pre-tokenized blocks "
                "will not match the published tokenizer."
            )
        return retriever_or_index.index, tokenizer
    return retriever_or_index, tokenizer


def _card_content(
    card: ModelCard | RealmModelCardData | str | None, model: Any, index: RealmIndex | None, repo_id: str | None
) -> str:
    if isinstance(card, ModelCard):
        return card.content
    if isinstance(card, str):
        return card
    if card is None:
        card = RealmModelCardData()
    elif isinstance(card, RealmModelCardData):
        card = copy.deepcopy(card)
    else:
        raise TypeError(f"`card` must be a ModelCard, a RealmModelCardData or a str, got {type(card).__name__}.")
    if card.model_id is None:
        card.model_id = repo_id
    if card.architecture is None:
        card.set_model(model)
    if index is not None and card.index_num_blocks is None:
        card.set_index(index)
    return generate_model_card(card).content


def _index_card(index: RealmIndex, repo_id: str) -> str:
    """The dataset card of a published index, from the packaged `templates/index_card.md`."""
    config = index.config
    card = DatasetCard.from_template(
        DatasetCardData(tags=["realm", "retrieval", "faiss", "open-domain-qa"]),
        template_path=str(INDEX_CARD_TEMPLATE_PATH),
        num_blocks=config.num_blocks,
        dim=config.dim,
        index_factory=config.index_factory,
        embedder_fingerprint=config.embedder_fingerprint,
        repo_id=repo_id,
    )
    return str(card)


def model_class_in(directory: Path) -> type:

    config_file = directory / CONFIG_NAME
    if not config_file.is_file():
        raise ValueError(f"{directory} has no {CONFIG_NAME}: it is not a REALM checkpoint.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from err
    model_type = config.get("model_type")
    if model_type != "realm":
        raise ValueError(f"{config_file} has model_type={model_type!r}; load_realm only loads REALM checkpoints.")
    architectures = config.get("architectures") or []
    for name in architectures:
        model_class = getattr(modeling_realm, name, None)
        if isinstance(model_class, type) and issubclass(model_class, modeling_realm.RealmPreTrainedModel):
            return model_class
    if architectures:
        raise ValueError(
            f"{config_file} names architectures {architectures}, none of which is a realm_hf model class."
        )
    logger.warning(f"{config_file} names no architecture; loading it as RealmEmbedder.")
    return modeling_realm.RealmEmbedder


def _is_legacy(directory: Path) -> bool:
    has_weights = any((directory / name).is_file() for name in _WEIGHTS_FILES)
    return not has_weights and any((directory / name).is_file() for name in _LEGACY_WEIGHTS_FILES)


def load_tokenizer_in(directory: Path) -> PreTrainedTokenizerBase | None:
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        logger.info(f"{directory} has no tokenizer files.")
        return None
    return AutoTokenizer.from_pretrained(directory)
