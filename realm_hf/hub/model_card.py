"""Model cards for REALM checkpoints: card data, a Jinja template, a Trainer callback and a metrics helper.

The design follows sentence-transformers' `model_card.py`: [`RealmModelCardData`] holds what the user sets (name,
license, base model, datasets, ...) next to what is filled automatically (architecture, knowledge-index statistics,
training hyper-parameters, evaluation results, framework versions). [`generate_model_card`] renders the packaged
template `templates/model_card.md` with `huggingface_hub.ModelCard.from_template`. Rendering never touches the network
(no Hub look-ups of the base model or of datasets) and sections without data are left out instead of being filled with
placeholders.

Evaluation results are written in the Hub's `model-index` format (`huggingface_hub.EvalResult`), so they show up in
the Hub's evaluation widget and parse back with `huggingface_hub.repocard_data.model_index_to_eval_results`.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import importlib.metadata
import math
import os
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..file_utils import atomic_write_text
from ..logging import get_logger
from ..retrieval.retriever import RealmRetriever
from ..version import __version__


logger = get_logger(__name__)

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
LIBRARY_NAME = "realm_hf"
DEFAULT_TAGS = ("realm", "retrieval", "open-domain-qa")
TRAINER_TAG = "generated_from_trainer"

REALM_CITATION = """@inproceedings{guu2020realm,
  title     = {{REALM}: Retrieval-Augmented Language Model Pre-Training},
  author    = {Guu, Kelvin and Lee, Kenton and Tung, Zora and Pasupat, Panupong and Chang, Ming-Wei},
  booktitle = {Proceedings of the 37th International Conference on Machine Learning},
  series    = {Proceedings of Machine Learning Research},
  volume    = {119},
  pages     = {3929--3938},
  publisher = {PMLR},
  year      = {2020},
  url       = {https://proceedings.mlr.press/v119/guu20a.html}
}"""

QA_TASK_TYPE = "question-answering"
QA_TASK_NAME = "Open-Domain Question Answering"

# Pipeline tag shown on the Hub for each architecture.
_PIPELINE_TAGS = {
    "RealmForOpenQA": "question-answering",
    "RealmReader": "question-answering",
    "RealmEmbedder": "feature-extraction",
    "RealmScorer": "feature-extraction",
    "RealmKnowledgeAugEncoder": "fill-mask",
    "RealmForPreTraining": "fill-mask",
}
# Configuration values summarised in the card.
_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "retriever_proj_size",
    "num_candidates",
    "searcher_beam_size",
    "reader_beam_size",
    "reader_seq_len",
    "max_span_width",
)
# Trainer metrics that are bookkeeping, not evaluation results.
_NON_METRIC_KEYS = re.compile(
    r"^(loss|runtime|samples_per_second|steps_per_second|epoch|step|model_preparation_time|"
    r"num_input_tokens_seen|total_flos|jit_compilation_time|.*_mem_.*_delta)$"
)
_METRIC_PREFIXES = ("eval_", "test_", "predict_")
_METRIC_NAMES = {"exact_match": "Exact Match", "em": "Exact Match", "f1": "F1", "accuracy": "Accuracy", "mrr": "MRR"}
# Training arguments that describe where/how a run is logged or saved rather than what was trained.
_IGNORED_ARGUMENTS = re.compile(
    r"^(output_dir|overwrite_output_dir|logging_dir|run_name|project|report_to|push_to_hub|hub_.*|trackio_.*|"
    r"resume_from_checkpoint|local_rank|log_level.*|log_on_each_node|logging_.*|save_.*|disable_tqdm|"
    r"dataloader_.*|do_train|do_eval|do_predict|skip_memory_metrics|include_.*|ddp_.*|"
    r"restore_callback_states_from_checkpoint|enable_jit_checkpoint|accelerator_config|use_cpu)$"
)
_REPORTED_ELSEWHERE = ("max_steps", "num_train_epochs", "per_device_train_batch_size")
_FRAMEWORKS = (
    ("realm_hf", ("realm_hf", "realm-hf")),
    ("Transformers", ("transformers",)),
    ("PyTorch", ("torch",)),
    ("Datasets", ("datasets",)),
    ("Accelerate", ("accelerate",)),
    ("huggingface_hub", ("huggingface_hub", "huggingface-hub")),
    ("FAISS", ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss")),
)


@dataclasses.dataclass
class RealmModelCardData:
    r"""
    Everything shown in the model card of a REALM checkpoint.

    Fields of the first group are set by the user; those of the second group are filled by [`set_model`],
    [`set_index`], [`RealmModelCardCallback`] and [`update_card_from_metrics`] (they can be set by hand too). Every
    field is optional: [`generate_model_card`] leaves out the sections it has no data for.

    Args:
        model_id (`str`, *optional*):
            Hub repository id of the model (used in the usage snippet, and as the default `model_name`).
        model_name (`str`, *optional*):
            Human-readable name, used as title and as the `model-index` name.
        model_description (`str`, *optional*):
            A paragraph describing the model, placed under the title.
        language (`str` or `list[str]`, *optional*):
            ISO 639 language code(s).
        license (`str`, *optional*):
            License identifier (for example `"apache-2.0"`).
        base_model (`str` or `list[str]`, *optional*):
            Hub id(s) of the checkpoint(s) this model was trained or converted from.
        datasets (`list[str]`, *optional*):
            Hub ids of the training datasets.
        tags (`list[str]`, *optional*):
            Extra tags, added after the default `realm`, `retrieval` and `open-domain-qa`.
        pipeline_tag (`str`, *optional*):
            Hub pipeline tag; derived from the architecture when not set.
        corpus_description (`str`, *optional*):
            What the knowledge index holds (for example `"English Wikipedia, 2018-12-20, 288-token blocks"`).
        architecture (`str`, *optional*):
            Model class name, for example `"RealmForOpenQA"` (filled by [`set_model`]).
        model_config (`dict[str, Any]`, *optional*):
            Summary of the model configuration (filled by [`set_model`]).
        num_parameters (`int`, *optional*):
            Number of parameters (filled by [`set_model`]).
        index_num_blocks (`int`, *optional*):
            Number of evidence blocks in the knowledge index (filled by [`set_index`]).
        index_dim (`int`, *optional*):
            Dimension of the block embeddings.
        index_factory (`str`, *optional*):
            FAISS factory string of the index (`"Flat"` is exact search).
        index_search_parameters (`dict[str, int]`, *optional*):
            Search-time parameters of approximate indexes (`nprobe`, `hnsw_ef_search`, `refine_factor`).
        embedder_fingerprint (`str`, *optional*):
            Fingerprint of the document embedder that produced the block embeddings.
        training_hyperparameters (`dict[str, Any]`, *optional*):
            Training hyper-parameters (filled by [`RealmModelCardCallback`]).
        training_logs (`list[dict[str, Any]]`, *optional*):
            One row per logged step: `epoch`, `step`, `training_loss` and evaluation metrics.
        eval_results (`list[huggingface_hub.EvalResult]`, *optional*):
            Evaluation results, written as the card's `model-index` (see [`update_card_from_metrics`]).
        citations (`dict[str, str]`, *optional*):
            BibTeX entries by name; defaults to the REALM paper (Guu et al., 2020).
    """

    model_id: str | None = None
    model_name: str | None = None
    model_description: str | None = None
    language: str | list[str] | None = None
    license: str | None = None
    base_model: str | list[str] | None = None
    datasets: list[str] = dataclasses.field(default_factory=list)
    tags: list[str] = dataclasses.field(default_factory=list)
    pipeline_tag: str | None = None
    corpus_description: str | None = None

    architecture: str | None = None
    model_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_parameters: int | None = None
    index_num_blocks: int | None = None
    index_dim: int | None = None
    index_factory: str | None = None
    index_search_parameters: dict[str, int] = dataclasses.field(default_factory=dict)
    embedder_fingerprint: str | None = None
    training_hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    training_logs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    eval_results: list[EvalResult] = dataclasses.field(default_factory=list)
    citations: dict[str, str] = dataclasses.field(default_factory=lambda: {"REALM": REALM_CITATION})

    # -- filling -----------------------------------------------------------------------------------------------------

    def set_model(self, model: Any) -> None:
        """Fills `architecture`, `model_config` and `num_parameters` from a REALM model (no network access).

        Args:
            model ([`RealmPreTrainedModel`]):
                The model to describe.
        """
        self.architecture = type(model).__name__
        config = getattr(model, "config", None)
        if config is not None:
            self.model_config = {key: getattr(config, key) for key in _CONFIG_KEYS if hasattr(config, key)}
        if hasattr(model, "num_parameters"):
            self.num_parameters = int(model.num_parameters())
        elif hasattr(model, "parameters"):
            self.num_parameters = sum(p.numel() for p in model.parameters())

    def set_index(self, index: Any) -> None:
        """Fills the knowledge-index statistics from a [`RealmIndex`] (or a [`RealmRetriever`]).

        Args:
            index ([`RealmIndex`] or [`RealmRetriever`]):
                The knowledge index.
        """

        if isinstance(index, RealmRetriever):
            index = index.index
        config = index.config
        self.index_num_blocks = int(config.num_blocks)
        self.index_dim = int(config.dim)
        self.index_factory = config.index_factory
        self.embedder_fingerprint = config.embedder_fingerprint
        self.index_search_parameters = {
            name: int(value)
            for name in ("nprobe", "hnsw_ef_search", "refine_factor")
            if (value := getattr(config, name, None)) is not None
        }

    def add_tags(self, *tags: str) -> None:
        """Adds tags that are not present yet."""
        for tag in tags:
            if tag not in self.tags:
                self.tags.append(tag)

    # -- export ------------------------------------------------------------------------------------------------------

    @property
    def all_tags(self) -> list[str]:
        """`list[str]`: the default tags followed by the user's, without duplicates."""
        return list(dict.fromkeys([*DEFAULT_TAGS, *self.tags]))

    @property
    def resolved_model_name(self) -> str:
        """`str`: `model_name`, else the repository name of `model_id`, else a generic name."""
        if self.model_name:
            return self.model_name
        if self.model_id:
            return self.model_id.rsplit("/", 1)[-1]
        return "REALM model"

    def to_model_card_data(self) -> ModelCardData:
        """Returns the Hub metadata (the YAML header of the card) as a `huggingface_hub.ModelCardData`.

        Returns:
            `huggingface_hub.ModelCardData` with `library_name: realm_hf`, the tags, base model, datasets, language,
            license, pipeline tag and, when there are evaluation results, a `model-index`.
        """
        pipeline_tag = self.pipeline_tag or _PIPELINE_TAGS.get(self.architecture or "")
        return ModelCardData(
            language=self.language,
            license=self.license,
            library_name=LIBRARY_NAME,
            tags=self.all_tags,
            base_model=self.base_model or None,
            datasets=list(self.datasets) or None,
            pipeline_tag=pipeline_tag,
            model_name=self.resolved_model_name if self.eval_results else None,
            eval_results=copy.deepcopy(self.eval_results) or None,
        )

    def template_kwargs(self) -> dict[str, Any]:
        """Returns the variables of the Jinja template (see `templates/model_card.md`).

        Returns:
            `dict[str, Any]`
        """
        base_models = [self.base_model] if isinstance(self.base_model, str) else list(self.base_model or [])
        index = None
        if self.index_num_blocks is not None:
            index = {
                "num_blocks": self.index_num_blocks,
                "dim": self.index_dim,
                "factory": self.index_factory,
                "search_parameters": dict(self.index_search_parameters),
                "embedder_fingerprint": self.embedder_fingerprint,
            }
        eval_rows = [
            {
                "dataset": result.dataset_name,
                "dataset_id": result.dataset_type,
                "split": result.dataset_split,
                "metric": result.metric_name or result.metric_type,
                "value": _format_value(result.metric_value),
            }
            for result in self.eval_results
        ]
        logs = [{key: _format_value(value) for key, value in row.items()} for row in self.training_logs]
        log_columns = list(dict.fromkeys(key for row in self.training_logs for key in row))
        return {
            "title": self.resolved_model_name,
            "model_id": self.model_id,
            "model_description": self.model_description,
            "architecture": self.architecture,
            "base_models": base_models,
            "training_datasets": list(self.datasets),
            "language": self.language,
            "license": self.license,
            "num_parameters": _format_count(self.num_parameters) if self.num_parameters else None,
            "model_config": dict(self.model_config),
            "corpus_description": self.corpus_description,
            "index": index,
            "eval_rows": eval_rows,
            "hyperparameters": {key: _format_value(value) for key, value in self.training_hyperparameters.items()},
            "training_logs": logs,
            "log_columns": log_columns,
            "framework_versions": framework_versions(),
            "citations": dict(self.citations),
        }


def generate_model_card(card_data: RealmModelCardData, template_path: str | Path | None = None) -> ModelCard:
    """Renders the model card of a REALM checkpoint. Makes no network call.

    Args:
        card_data ([`RealmModelCardData`]):
            The card content.
        template_path (`str` or `Path`, *optional*):
            A Jinja template; defaults to the packaged `realm_hf/hub/templates/model_card.md`.

    Returns:
        `huggingface_hub.ModelCard`: the card; `str(card)` is the README.md content and `card.data` its metadata.

    Example:

    ```python
    >>> from realm_hf.hub.model_card import RealmModelCardData, generate_model_card, update_card_from_metrics
    >>> card_data = RealmModelCardData(model_id="me/realm-nq", license="apache-2.0")
    >>> _ = update_card_from_metrics(card_data, {"eval_exact_match": 40.2}, "nq_open", "test")
    >>> card = generate_model_card(card_data)
    >>> card.data.library_name
    'realm_hf'
    ```
    """
    return ModelCard.from_template(
        card_data.to_model_card_data(),
        template_path=str(template_path or TEMPLATE_PATH),
        **card_data.template_kwargs(),
    )


def save_model_card(card: ModelCard | RealmModelCardData | str, path: str | os.PathLike) -> Path:
    """Writes a model card to `path` (a `README.md` file, or a directory to put one in) atomically.

    The card is written to a temporary file next to `path` and renamed over it when complete, so an interrupted write
    (an exception, a full disk, a killed process) leaves the previous card whole and loadable. `ModelCard.save` writes
    in place.

    Args:
        card (`huggingface_hub.ModelCard`, [`RealmModelCardData`] or `str`):
            The card, card data to render with [`generate_model_card`], or the README.md text.
        path (`str` or `os.PathLike`):
            The file to write, or an existing directory (the card is then its `README.md`).

    Returns:
        `Path`: the file written.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "README.md"
    if isinstance(card, RealmModelCardData):
        card = generate_model_card(card)
    if isinstance(card, ModelCard):
        card = str(card)
    if not isinstance(card, str):
        raise TypeError(
            f"save_model_card: `card` must be a ModelCard, a RealmModelCardData or a str, got {type(card).__name__}."
        )
    atomic_write_text(path, card)
    return path


def update_card_from_metrics(
    card_data: RealmModelCardData,
    metrics: Mapping[str, Any],
    dataset_name: str,
    split: str | None = "validation",
    dataset_type: str | None = None,
    dataset_config: str | None = None,
) -> list[EvalResult]:
    r"""
    Records evaluation metrics (for example from a custom evaluation loop) as `model-index` results of the card.

    Metric keys may carry a Trainer prefix (`eval_exact_match`, `test_f1`, ...), which is dropped. Bookkeeping values
    (`loss`, `runtime`, `samples_per_second`, `epoch`, ...) and non-numeric values are ignored. A metric already
    recorded for the same dataset, config and split is replaced, so calling this again after a new evaluation
    updates the card instead of duplicating rows.

    Args:
        card_data ([`RealmModelCardData`]):
            The card data to update (in place).
        metrics (`Mapping[str, Any]`):
            Metric name -> value, for example `{"exact_match": 40.2, "f1": 46.1, "recall@5": 71.0}`.
        dataset_name (`str`):
            The evaluation dataset: a Hub id such as `"google-research-datasets/nq_open"` or a display name.
        split (`str`, *optional*, defaults to `"validation"`):
            The split that was evaluated.
        dataset_type (`str`, *optional*):
            Hub id of the dataset when `dataset_name` is a display name; defaults to `dataset_name`.
        dataset_config (`str`, *optional*):
            Dataset configuration name.

    Returns:
        `list[huggingface_hub.EvalResult]`: the results that were recorded.
    """
    dataset_type = dataset_type or dataset_name
    recorded = []
    for key, value in metrics.items():
        metric = _strip_metric_prefix(str(key))
        if _NON_METRIC_KEYS.match(metric) or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        result = EvalResult(
            task_type=QA_TASK_TYPE,
            task_name=QA_TASK_NAME,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_config=dataset_config,
            dataset_split=split,
            metric_type=metric,
            metric_name=_metric_display_name(metric),
            metric_value=round(float(value), 6),
        )
        card_data.eval_results = [
            existing
            for existing in card_data.eval_results
            if (existing.dataset_type, existing.dataset_config, existing.dataset_split, existing.metric_type)
            != (dataset_type, dataset_config, split, metric)
        ]
        card_data.eval_results.append(result)
        recorded.append(result)
    return recorded


def collect_training_hyperparameters(args: TrainingArguments, state: TrainerState | None = None) -> dict[str, Any]:
    """The training hyper-parameters worth reporting: those differing from the defaults, plus the essentials.

    Always reported: `learning_rate`, `train_batch_size` (per device), `total_train_batch_size` (per device x
    gradient accumulation x processes), `gradient_accumulation_steps`, `training_steps` (or `num_epochs`), `seed`.
    Arguments about logging, saving, the Hub and data loading are left out.

    Args:
        args (`transformers.TrainingArguments`):
            The arguments of the run.
        state (`transformers.TrainerState`, *optional*):
            The trainer state; its `max_steps` is the actual number of optimisation steps.

    Returns:
        `dict[str, Any]`
    """
    values = args.to_dict()
    defaults = _default_arguments(args)
    hyperparameters: dict[str, Any] = {
        "learning_rate": args.learning_rate,
        "train_batch_size": args.per_device_train_batch_size,
        "total_train_batch_size": args.per_device_train_batch_size
        * args.gradient_accumulation_steps
        * _world_size(args),
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "seed": args.seed,
    }
    max_steps = state.max_steps if state is not None and state.max_steps > 0 else args.max_steps
    if max_steps and max_steps > 0:
        hyperparameters["training_steps"] = int(max_steps)
    else:
        hyperparameters["num_epochs"] = args.num_train_epochs
    for key, value in values.items():
        if key in hyperparameters or key in _REPORTED_ELSEWHERE or _IGNORED_ARGUMENTS.match(key):
            continue
        if key in defaults and _is_default(value, defaults[key]):
            continue
        hyperparameters[key] = _plain(value)
    return hyperparameters


def training_logs_from_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turns `TrainerState.log_history` into one row per step with the training loss and evaluation metrics.

    Args:
        log_history (`list[dict[str, Any]]`):
            The trainer's log history.

    Returns:
        `list[dict[str, Any]]`: rows with `epoch`, `step`, `training_loss` and the `eval_*` metrics (prefix kept).
    """
    rows: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "step" not in entry or "train_runtime" in entry:
            continue
        row = rows.setdefault(int(entry["step"]), {"epoch": entry.get("epoch"), "step": int(entry["step"])})
        if "loss" in entry:
            row["training_loss"] = entry["loss"]
        for key, value in entry.items():
            if key.startswith("eval_") and not _NON_METRIC_KEYS.match(_strip_metric_prefix(key)):
                row[key] = value
    return [
        {key: value for key, value in row.items() if value is not None}
        for _, row in sorted(rows.items())
        if len(row) > 2
    ]


def pretraining_card_data(
    description: str, args: TrainingArguments | None = None, history: Sequence[Mapping[str, Any]] = ()
) -> RealmModelCardData:
    """The card of a REALM pre-training run, one path for `train_realm`, the `Trainer` with `IndexRefreshCallback` and
    `realm-hf pretrain --corpus`: `description`, the hyper-parameters of `args` ([`collect_training_hyperparameters`])
    and one log row per record of `history` (the loop's records or `TrainerState.log_history`) with its numbers."""
    return RealmModelCardData(
        model_description=description,
        training_hyperparameters=collect_training_hyperparameters(args) if args is not None else {},
        training_logs=[
            {key: value for key, value in record.items() if isinstance(value, (int, float))} for record in history
        ],
    )


class RealmModelCardCallback(TrainerCallback):
    r"""
    A [`~transformers.TrainerCallback`] that fills a [`RealmModelCardData`] during training: the model summary at
    init, the training hyper-parameters when training begins, the metrics of every evaluation (as `model-index`
    results for `eval_dataset_name`), and the training logs at the end.

    Args:
        card_data ([`RealmModelCardData`], *optional*):
            The card data to fill; a new one is created if not given (see the `card_data` attribute).
        eval_dataset_name (`str`, *optional*):
            Dataset the Trainer evaluates on (Hub id or display name). Without it, evaluation metrics are only kept
            in the training logs.
        eval_split (`str`, *optional*, defaults to `"validation"`):
            Split the Trainer evaluates on.

    Example:

    ```python
    >>> callback = RealmModelCardCallback(RealmModelCardData(model_id="me/realm-nq"), eval_dataset_name="nq_open")
    >>> trainer = Trainer(model=model, args=args, callbacks=[callback], ...)
    >>> trainer.train()
    >>> card = generate_model_card(callback.card_data)
    ```
    """

    def __init__(
        self,
        card_data: RealmModelCardData | None = None,
        eval_dataset_name: str | None = None,
        eval_split: str = "validation",
    ) -> None:
        self.card_data = card_data if card_data is not None else RealmModelCardData()
        self.eval_dataset_name = eval_dataset_name
        self.eval_split = eval_split

    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs
    ) -> None:
        self.card_data.add_tags(TRAINER_TAG)
        if model is not None:
            self.card_data.set_model(model)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs
    ) -> None:
        self.card_data.add_tags(TRAINER_TAG)
        if model is not None and self.card_data.architecture is None:
            self.card_data.set_model(model)
        self.card_data.training_hyperparameters = collect_training_hyperparameters(args, state)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs,
    ) -> None:
        if metrics and self.eval_dataset_name:
            update_card_from_metrics(self.card_data, metrics, self.eval_dataset_name, self.eval_split)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.card_data.training_logs = training_logs_from_history(state.log_history)
        if state.max_steps and "training_steps" in self.card_data.training_hyperparameters:
            self.card_data.training_hyperparameters["training_steps"] = int(state.max_steps)


def framework_versions() -> dict[str, str]:
    """Versions of Python and of the installed libraries (read from the package metadata; no import, no network)."""
    versions = {"Python": platform.python_version()}
    for label, distributions in _FRAMEWORKS:
        for distribution in distributions:
            try:
                versions[label] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    versions.setdefault("realm_hf", __version__)
    return versions


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


def _strip_metric_prefix(key: str) -> str:
    for prefix in _METRIC_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _metric_display_name(metric: str) -> str:
    if metric in _METRIC_NAMES:
        return _METRIC_NAMES[metric]
    match = re.fullmatch(r"(retrieval_)?(recall|precision|hits|accuracy)@(\d+)", metric)
    if match:
        prefix = "Retrieval " if match[1] else ""
        return f"{prefix}{match[2].capitalize()}@{match[3]}"
    return metric.replace("_", " ").capitalize()


def _default_arguments(args: TrainingArguments) -> dict[str, Any]:
    """The dataclass defaults of `type(args)`.

    A default `TrainingArguments` is *not* constructed for the comparison: its `__post_init__` resets accelerate's
    global `AcceleratorState`, which breaks a running `Trainer`.
    """
    defaults = {}
    for field in dataclasses.fields(args):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


def _is_default(value: Any, default: Any) -> bool:
    value, default = _plain(value), _plain(default)
    # `__post_init__` turns some unset values into another empty value (None -> False, "" -> []).
    return value == default or (not value and not default)


def _world_size(args: TrainingArguments) -> int:
    try:
        return max(1, int(args.world_size))
    except Exception:  # no distributed state could be set up
        return 1


def _plain(value: Any) -> Any:
    """Enums -> their value, tuples -> lists (YAML/JSON-friendly, comparable)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _format_value(value: Any) -> Any:
    if isinstance(value, float):
        if value == 0 or 1e-4 <= abs(value) < 1e6:
            return f"{value:.4f}".rstrip("0").rstrip(".")
        return f"{value:.4g}"
    return value


def _format_count(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)
