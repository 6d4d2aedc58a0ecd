"""Model cards: rendering, Hub metadata round trip, no network, Trainer callback and the metrics helper."""

import socket
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import EvalResult, ModelCard, ModelCardData, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import TrainerControl, TrainerState, TrainingArguments

from realm_hf import RealmConfig, RealmForOpenQA
from realm_hf.hub.model_card import (
    REALM_CITATION,
    TEMPLATE_PATH,
    RealmModelCardCallback,
    RealmModelCardData,
    generate_model_card,
    update_card_from_metrics,
)
from realm_hf.retrieval.index import RealmIndex

from .utils import tiny_config_kwargs


PLACEHOLDERS = ("More Information Needed", "None", "{{ ", "}}\n", "{%", "[]", "{}")


@pytest.fixture(scope="module")
def tiny_model() -> RealmForOpenQA:
    return RealmForOpenQA(RealmConfig(**tiny_config_kwargs())).eval()


@pytest.fixture(scope="module")
def tiny_index() -> RealmIndex:
    embeddings = np.random.default_rng(0).normal(size=(7, 16)).astype(np.float32)
    return RealmIndex.build(
        None, embeddings, index_factory="HNSW8", embedder_fingerprint="sha256:abc123", show_progress=False
    )


def full_card_data(model, index) -> RealmModelCardData:
    card_data = RealmModelCardData(
        model_id="tester/realm-orqa-tiny",
        language="en",
        license="apache-2.0",
        base_model="google/realm-cc-news-pretrained-embedder",
        datasets=["google-research-datasets/nq_open"],
        tags=["custom-tag"],
        corpus_description="Seven random blocks.",
    )
    card_data.set_model(model)
    card_data.set_index(index)
    update_card_from_metrics(
        card_data,
        {"eval_exact_match": 40.125, "eval_f1": 46.75, "eval_recall@5": 71.5, "eval_loss": 2.0, "eval_runtime": 3.2},
        dataset_name="google-research-datasets/nq_open",
        split="test",
    )
    card_data.training_hyperparameters = {"learning_rate": 3e-05, "train_batch_size": 8, "training_steps": 1234}
    return card_data


def test_template_is_package_data():
    """The template ships in the wheel: a `package-data` pattern of pyproject.toml matches its path."""
    import ast
    import fnmatch
    import re

    import realm_hf

    assert TEMPLATE_PATH.is_file()
    root = Path(realm_hf.__file__).parent
    package_data = re.search(
        r"\[tool\.setuptools\.package-data\]\s*realm_hf = (\[.*?\])", (root.parent / "pyproject.toml").read_text()
    )
    patterns = ast.literal_eval(package_data.group(1))
    assert any(fnmatch.fnmatch(TEMPLATE_PATH.relative_to(root).as_posix(), pattern) for pattern in patterns)


def test_card_contains_the_measured_numbers_and_metadata_round_trips(tiny_model, tiny_index, tmp_path):
    card = generate_model_card(full_card_data(tiny_model, tiny_index))
    content = str(card)
    for text in (
        "| Exact Match | 40.125 |",
        "| F1 | 46.75 |",
        "| Recall@5 | 71.5 |",
        "| Blocks | 7 |",
        "| Embedding dimension | 16 |",
        "`HNSW8`",
        "| `hnsw_ef_search` | 128 |",
        "`sha256:abc123`",
        "Seven random blocks.",
        "- `learning_rate`: 3e-05",
        "- `training_steps`: 1234",
        "`RealmForOpenQA`",
        f"Parameters:** {tiny_model.num_parameters() / 1e3:.1f}K",
        "| `retriever_proj_size` | 16 |",
        'load_realm("tester/realm-orqa-tiny")',
        "[google/realm-cc-news-pretrained-embedder](https://huggingface.co/google/realm-cc-news-pretrained-embedder)",
        REALM_CITATION,
    ):
        assert text in content, text
    for placeholder in PLACEHOLDERS:
        assert placeholder not in content.split("---", 2)[2], placeholder
    assert "loss" not in content.lower().split("## evaluation")[1].split("##")[0]  # bookkeeping metrics left out

    # Metadata: library, tags, base model, datasets, model-index -> the same EvalResults.
    path = tmp_path / "README.md"
    card.save(path)
    metadata = metadata_load(path)
    assert metadata["library_name"] == "realm_hf"
    assert metadata["tags"] == ["realm", "retrieval", "open-domain-qa", "custom-tag"]
    assert metadata["base_model"] == "google/realm-cc-news-pretrained-embedder"
    assert metadata["datasets"] == ["google-research-datasets/nq_open"]
    assert metadata["pipeline_tag"] == "question-answering"
    model_name, results = model_index_to_eval_results(metadata["model-index"])
    assert model_name == "realm-orqa-tiny"
    assert [(r.task_type, r.metric_type, r.metric_value, r.dataset_split) for r in results] == [
        ("question-answering", "exact_match", 40.125, "test"),
        ("question-answering", "f1", 46.75, "test"),
        ("question-answering", "recall@5", 71.5, "test"),
    ]
    assert ModelCardData(**metadata).to_dict() == card.data.to_dict() == metadata
    reloaded = ModelCard.load(path)
    assert reloaded.data.eval_results == card.data.eval_results
    assert reloaded.text == card.text


def test_minimal_card_has_no_placeholders():
    content = str(generate_model_card(RealmModelCardData()))
    body = content.split("---", 2)[2]
    for placeholder in PLACEHOLDERS:
        assert placeholder not in body, placeholder
    for section in ("## Evaluation", "## Training", "## Knowledge Index", "### Configuration", "Base model"):
        assert section not in content
    assert "# REALM model" in content and "## Citation" in content and "## Usage" in content
    assert "model-index" not in content
    assert metadata_load_text(content) == {
        "library_name": "realm_hf",
        "tags": ["realm", "retrieval", "open-domain-qa"],
    }


def metadata_load_text(content: str) -> dict:
    return ModelCard(content).data.to_dict()


def test_generation_makes_no_network_call(tiny_model, tiny_index, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access during card generation: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    card = generate_model_card(full_card_data(tiny_model, tiny_index))
    assert card.data.library_name == "realm_hf"


def test_update_card_from_metrics_is_idempotent():
    card_data = RealmModelCardData(model_name="m")
    first = update_card_from_metrics(
        card_data,
        {"eval_exact_match": 10.0, "eval_f1": 12.0, "eval_samples_per_second": 99.0, "epoch": 1.0, "note": "x"},
        "nq_open",
    )
    assert [r.metric_type for r in first] == ["exact_match", "f1"]
    update_card_from_metrics(card_data, {"test_exact_match": 20.0, "retrieval_recall@20": 55.0}, "nq_open")
    update_card_from_metrics(card_data, {"exact_match": 30.0}, "nq_open", split="test")
    assert [(r.metric_type, r.metric_name, r.metric_value, r.dataset_split) for r in card_data.eval_results] == [
        ("f1", "F1", 12.0, "validation"),
        ("exact_match", "Exact Match", 20.0, "validation"),
        ("retrieval_recall@20", "Retrieval Recall@20", 55.0, "validation"),
        ("exact_match", "Exact Match", 30.0, "test"),
    ]
    assert all(isinstance(r, EvalResult) and r.task_type == "question-answering" for r in card_data.eval_results)


def test_callback_collects_hyperparameters_metrics_and_logs(tiny_model, tmp_path):
    card_data = RealmModelCardData(model_id="tester/realm-trained")
    callback = RealmModelCardCallback(card_data, eval_dataset_name="tiny-nq", eval_split="validation")
    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=3e-5,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=20,
        warmup_steps=3,
        weight_decay=0.01,
        seed=7,
        logging_steps=10,
        report_to="none",
    )
    state = TrainerState(max_steps=20)
    control = TrainerControl()

    callback.on_init_end(args, state, control, model=tiny_model)
    callback.on_train_begin(args, state, control, model=tiny_model)
    state.log_history = [
        {"loss": 2.5, "learning_rate": 2e-5, "epoch": 0.5, "step": 10},
        {"eval_exact_match": 20.0, "eval_f1": 25.0, "eval_loss": 3.1, "eval_runtime": 0.5, "epoch": 0.5, "step": 10},
    ]
    callback.on_evaluate(args, state, control, metrics=state.log_history[-1])
    state.log_history += [
        {"loss": 2.0, "learning_rate": 1e-5, "epoch": 1.0, "step": 20},
        {"eval_exact_match": 30.0, "eval_f1": 35.5, "eval_loss": 2.9, "eval_runtime": 0.5, "epoch": 1.0, "step": 20},
        {"train_runtime": 12.0, "train_loss": 2.25, "epoch": 1.0, "step": 20},
    ]
    callback.on_evaluate(args, state, control, metrics=state.log_history[-2])
    callback.on_train_end(args, state, control)

    hyperparameters = card_data.training_hyperparameters
    assert hyperparameters["learning_rate"] == 3e-5
    assert hyperparameters["train_batch_size"] == 4
    assert hyperparameters["total_train_batch_size"] == 8
    assert hyperparameters["gradient_accumulation_steps"] == 2
    assert hyperparameters["training_steps"] == 20
    assert hyperparameters["warmup_steps"] == 3 and hyperparameters["weight_decay"] == 0.01
    assert hyperparameters["seed"] == 7
    for default_or_bookkeeping in ("adam_beta1", "lr_scheduler_type", "output_dir", "logging_steps", "report_to"):
        assert default_or_bookkeeping not in hyperparameters
    assert "num_epochs" not in hyperparameters

    assert [(r.metric_type, r.metric_value, r.dataset_name) for r in card_data.eval_results] == [
        ("exact_match", 30.0, "tiny-nq"),
        ("f1", 35.5, "tiny-nq"),
    ]
    assert card_data.training_logs == [
        {"epoch": 0.5, "step": 10, "training_loss": 2.5, "eval_exact_match": 20.0, "eval_f1": 25.0},
        {"epoch": 1.0, "step": 20, "training_loss": 2.0, "eval_exact_match": 30.0, "eval_f1": 35.5},
    ]
    assert card_data.architecture == "RealmForOpenQA"
    assert "generated_from_trainer" in card_data.all_tags

    content = str(generate_model_card(card_data))
    assert "| tiny-nq | validation | Exact Match | 30 |" in content
    assert "- `total_train_batch_size`: 8" in content and "- `warmup_steps`: 3" in content
    assert "| 1 | 20 | 2 | 30 | 35.5 |" in content
    assert "generated_from_trainer" in content


def test_callback_in_a_real_trainer_run(tmp_path):
    """The callback must not disturb a running Trainer (building default TrainingArguments would reset accelerate)."""
    import datasets
    import torch
    from transformers import Trainer

    class Regression(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, x=None, labels=None):
            logits = self.linear(x).squeeze(-1)
            return {"loss": ((logits - labels) ** 2).mean(), "logits": logits}

    data = datasets.Dataset.from_dict({"x": [[1.0, 2.0]] * 8, "labels": [1.0] * 8})
    callback = RealmModelCardCallback(eval_dataset_name="toy-questions")
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        eval_strategy="steps",
        eval_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=Regression(),
        args=args,
        train_dataset=data,
        eval_dataset=data,
        callbacks=[callback],
        compute_metrics=lambda prediction: {"exact_match": 50.0},
    )
    trainer.train()

    card_data = callback.card_data
    assert card_data.training_hyperparameters["learning_rate"] == 1e-3
    assert card_data.training_hyperparameters["training_steps"] == 2
    assert card_data.training_hyperparameters["eval_strategy"] == "steps"
    assert [(r.metric_type, r.metric_value) for r in card_data.eval_results] == [("exact_match", 50.0)]
    assert [row["step"] for row in card_data.training_logs] == [1, 2]
    assert "| toy-questions | validation | Exact Match | 50 |" in str(generate_model_card(card_data))
