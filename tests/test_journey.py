"""The paper's whole pipeline on a tiny world: `realm-hf pretrain` -> the saved model loads in a fresh process ->
bridge to `RealmForOpenQA` (same retriever) -> `realm-hf finetune` -> `realm-hf ask` answers from the saved model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from realm_hf import RealmForOpenQA, gold_passage_recall
from realm_hf.cli import main
from realm_hf.demo.job import DemoArguments, run_demo
from realm_hf.demo.openqa import FinetuneArguments, initial_model, load_world_questions
from realm_hf.hub.publish import load_realm


REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_WORLD = dict(
    max_steps=4, ict_steps=3, reading_steps=3, per_device_train_batch_size=8, num_people=8, num_cities=3, held_out_fraction=0.25,
    index_refresh_steps=2, eval_steps=4, num_eval_facts=8, hidden_size=32, num_hidden_layers=2, disable_tqdm=True,
)  # fmt: skip

# A fresh process loads the pre-trained model with the Auto class and its retriever, and prints the top-3 block ids
# of the questions (query tower -> index).
_FRESH_TOP_K = """
import json, sys, torch, realm_hf
from transformers import AutoModelForPreTraining, AutoTokenizer
model = AutoModelForPreTraining.from_pretrained(sys.argv[1]).eval()
assert type(model).__name__ == "RealmForPreTraining"
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
retriever = realm_hf.RealmRetriever.from_pretrained(sys.argv[1])
batch = tokenizer(json.loads(sys.argv[2]), padding=True, return_tensors="pt")
with torch.no_grad():
    query = model.query_embedder(**batch).projected_score
print(json.dumps(retriever.index.search(query.numpy(), 3)[1].tolist()))
"""


def _python(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("journey") / "realm-demo"
    run_demo(DemoArguments(output_dir=str(run), **TINY_WORLD))
    return run


def test_pretrain_finetune_ask(pretrained_run, tmp_path):
    train, evaluation, _ = load_world_questions(pretrained_run)
    assert len(evaluation) == 3 * 2 and len(train) == 3 * 6  # 2 of 8 people held out, three questions each
    assert not set(train["question"]) & set(evaluation["question"])
    questions = list(evaluation["question"])

    # The bridge keeps the pre-trained retriever: a fresh process's top-k with the loaded pre-trained model equals
    # the open-QA model's, and the block embeddings are the pre-training index's (not recomputed).
    fresh_top_k = json.loads(_python("-c", _FRESH_TOP_K, str(pretrained_run / "final"), json.dumps(questions)))
    model, tokenizer = initial_model(pretrained_run, "realm")
    assert isinstance(model, RealmForOpenQA)
    batch = tokenizer(questions, padding=True, return_tensors="pt")
    with torch.no_grad():
        query = model.eval().embedder(**batch).projected_score
    assert model.retriever.index.search(query.numpy(), 3)[1].tolist() == fresh_top_k
    _, _, pretrained_retriever = load_realm(pretrained_run / "final")
    np.testing.assert_array_equal(
        np.asarray(model.retriever.index.embeddings), np.asarray(pretrained_retriever.index.embeddings)
    )

    # Fine-tune (the CLI), then ask the saved model in a fresh process.
    output = tmp_path / "openqa"
    code = main(["finetune", "--pretrained_dir", str(pretrained_run), "--output_dir", str(output), "--max_steps", "3",
                 "--per_device_train_batch_size", "4", "--searcher_beam_size", "4", "--reader_beam_size", "2", "--warmup_steps", "1",
                 "--save_steps", "2", "--disable_tqdm", "True"])  # fmt: skip
    assert code == 0
    report = json.loads((output / "openqa_report.json").read_text())
    assert report["num_eval_questions"] == 6 and report["init"] == "realm"
    assert {"exact_match", "gold_recall_at_1", "gold_recall_at_5"} <= set(report["after"])
    assert [r["step"] for r in report["log_history"] if "loss" in r][-1] == 3
    assert not (tmp_path / "openqa-checkpoints").exists()  # removed once the model is saved
    assert json.loads((output / "config.json").read_text())["architectures"] == ["RealmForOpenQA"]

    lines = _python("-m", "realm_hf.cli", "ask", str(output), *questions[:2]).strip().splitlines()
    answers = [json.loads(line) for line in lines]
    assert [a["question"] for a in answers] == questions[:2]
    for answer in answers:
        assert answer["error"] is None and answer["answer"] and answer["evidence"]
        assert len(answer["retrieved_block_ids"]) == 2


@pytest.mark.parametrize("init", ["warm_start", "random"])
def test_finetune_from_the_baselines(pretrained_run, tmp_path, init):
    """The ORQA-style start (the model before REALM pre-training) and random weights fine-tune the same way."""
    model, _ = initial_model(pretrained_run, init)
    final, _ = initial_model(pretrained_run, "realm")
    # REALM pre-training (or random initialisation) changed the query tower and the index.
    assert not torch.equal(model.embedder.cls.dense.weight, final.embedder.cls.dense.weight)
    assert not np.array_equal(
        np.asarray(model.retriever.index.embeddings), np.asarray(final.retriever.index.embeddings)
    )
    code = main(["finetune", "--pretrained_dir", str(pretrained_run), "--init", init, "--output_dir",
                 str(tmp_path / init), "--max_steps", "2", "--per_device_train_batch_size", "4", "--searcher_beam_size", "4",
                 "--reader_beam_size", "2", "--warmup_steps", "0", "--save_steps", "0", "--disable_tqdm", "True"])  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / init / "openqa_report.json").read_text())["init"] == init


def test_finetune_refuses_what_it_cannot_use(pretrained_run, tmp_path):
    with pytest.raises(ValueError, match="init must be one of"):
        FinetuneArguments(pretrained_dir=str(pretrained_run), init="bert")
    with pytest.raises(ValueError, match="retriever_supervision must be one of"):
        FinetuneArguments(pretrained_dir=str(pretrained_run), retriever_supervision="gold")
    with pytest.raises(ValueError, match="cannot exceed searcher_beam_size"):
        FinetuneArguments(searcher_beam_size=2, reader_beam_size=4)
    with pytest.raises(FileNotFoundError, match="realm-hf pretrain"):
        load_world_questions(tmp_path)
    # A run that pushed to the Hub: its target is not re-checked (no token here) when its world is read back.
    saved = json.loads((pretrained_run / "demo_args.json").read_text())
    (tmp_path / "demo_args.json").write_text(json.dumps({**saved, "push_to_hub": True, "hub_model_id": "a/b/c"}))
    assert len(load_world_questions(tmp_path)[1]) == 6
    with pytest.raises(FileNotFoundError, match="is the run complete"):
        initial_model(tmp_path, "realm")


def test_table1_script_compares_the_three_starts(pretrained_run, tmp_path):
    """`benchmarks/table1_openqa.py` fine-tunes every start of one pre-training run with the same settings."""
    output = tmp_path / "table1.json"
    printed = _python(str(REPO_ROOT / "benchmarks" / "table1_openqa.py"), "--pretrained_dir", str(pretrained_run),
                      "--max_steps", "1", "--output", str(output))  # fmt: skip
    result = json.loads(output.read_text())
    assert [row["init"] for row in result["starts"]] == ["realm", "warm_start", "random"]
    assert result["num_eval_questions"] == 6 and result["settings"]["max_steps"] == 1 and result["seeds"] == [0]
    assert "| REALM pre-trained |" in printed and str(pretrained_run) not in output.read_text()
    # The numbers are each start's own: its zero-shot gold-document recall, computed here independently.
    _, evaluation, _ = load_world_questions(pretrained_run)
    for row in result["starts"][:2]:  # the random start re-draws its weights per seed; the other two are fixed
        model, tokenizer = initial_model(pretrained_run, row["init"])
        recall = gold_passage_recall(model.embedder, model.retriever.index, tokenizer, evaluation["question"],
                                     evaluation["gold_doc_ids"], ks=(1, 5))  # fmt: skip
        assert row["before"]["gold_recall_at_1"] == pytest.approx(recall["gold_recall_at_1"]), row["init"]
        assert row["before"]["gold_recall_at_5"] == pytest.approx(recall["gold_recall_at_5"]), row["init"]


def test_supervision_script_compares_answer_and_gold_document_supervision(pretrained_run, tmp_path):
    """`benchmarks/openqa_supervision.py` fine-tunes one start with both supervisions and reports per relation."""
    output = tmp_path / "supervision.json"
    printed = _python(str(REPO_ROOT / "benchmarks" / "openqa_supervision.py"), "--pretrained_dir", str(pretrained_run),
                      "--max_steps", "1", "--output", str(output))  # fmt: skip
    result = json.loads(output.read_text())
    assert [run["supervision"] for run in result["runs"]] == ["answer", "gold_document"]
    relations = set(result["before"])
    assert relations <= {"birthplace", "birth_year", "work_place"} and relations
    assert all(set(run["per_relation"]) == relations for run in result["runs"])
    for row in [result["before"], *(run["per_relation"] for run in result["runs"])]:
        for relation in row.values():
            assert sum(relation["top1_kinds"].values()) == pytest.approx(1.0)
    assert "supervision: gold_document, seed 0" in printed


def test_start_diagnostics_script_measures_both_starts(pretrained_run, tmp_path):
    """`benchmarks/openqa_start_diagnostics.py` measures zero-shot retrieval of a run's starts."""
    output = tmp_path / "diagnostics.json"
    _python(str(REPO_ROOT / "benchmarks" / "openqa_start_diagnostics.py"), "--pretrained_dirs", str(pretrained_run),
            "--output", str(output))  # fmt: skip
    rows = json.loads(output.read_text())["starts"]
    assert [row["init"] for row in rows] == ["warm_start", "realm"]
    _, evaluation, _ = load_world_questions(pretrained_run)
    for row in rows:
        assert set(row["question"]) == set(row["name_only"]) == {"gold_recall_at_1", "gold_recall_at_16"}
        assert 0.0 <= row["top16_entropy"] <= np.log(16) + 1e-6
        # Each row is its own start's: the questions' recall, computed here independently, and not the name-only one.
        model, tokenizer = initial_model(pretrained_run, row["init"])
        recall = gold_passage_recall(model.embedder, model.retriever.index, tokenizer, evaluation["question"],
                                     evaluation["gold_doc_ids"], ks=(1, 16))  # fmt: skip
        assert row["question"] == pytest.approx(recall), row["init"]


def test_finetune_pushes_the_model_to_the_hub(pretrained_run, tmp_path, hub_server, capsys):
    """`realm-hf finetune --push_to_hub` publishes the fine-tuned model with its tokenizer, index and card, and a bad
    repository id is refused before anything runs."""
    from huggingface_hub import HfApi

    args = ["finetune", "--pretrained_dir", str(pretrained_run), "--max_steps", "1", "--per_device_train_batch_size", "4",
            "--searcher_beam_size", "4", "--reader_beam_size", "2", "--warmup_steps", "0", "--save_steps", "0",
            "--disable_tqdm", "True", "--push_to_hub"]  # fmt: skip
    assert main([*args, "--output_dir", str(tmp_path / "bad"), "--hub_model_id", "a/b/c"]) == 2
    assert "Repo id" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main([*args, "--output_dir", str(tmp_path / "openqa"), "--hub_model_id", "tester/openqa"]) == 0
    files = set(HfApi().list_repo_files("tester/openqa"))
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json", "index/index_config.json"} <= files
    model, tokenizer, retriever = load_realm("tester/openqa")
    assert isinstance(model, RealmForOpenQA) and retriever is not None
    assert json.loads((tmp_path / "openqa" / "openqa_report.json").read_text())["hub_commit"]


class _Killed(Exception):
    pass


def test_finetune_resumes_from_its_last_checkpoint(pretrained_run, tmp_path, monkeypatch):
    """A fine-tuning run killed after its step-2 checkpoint resumes there when run again: two more steps, not four."""
    from realm_hf.demo.openqa import run_finetune
    from realm_hf.training.openqa import RealmTrainer

    steps = []
    original = RealmTrainer.training_step

    def counting_step(self, *args, **kwargs):
        if self.state.global_step == 3 and "resumed" not in steps:
            raise _Killed("killed at step 3")
        steps.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RealmTrainer, "training_step", counting_step)
    args = FinetuneArguments(
        pretrained_dir=str(pretrained_run), output_dir=str(tmp_path / "openqa"), max_steps=4, per_device_train_batch_size=4,
        searcher_beam_size=4, reader_beam_size=2, warmup_steps=0, save_steps=2, disable_tqdm=True,
    )  # fmt: skip
    with pytest.raises(_Killed):
        run_finetune(args)
    assert (tmp_path / "openqa-checkpoints" / "checkpoint-2").is_dir() and not (tmp_path / "openqa").exists()
    steps.append("resumed")
    report = run_finetune(args)
    assert steps == [0, 1, 2, "resumed", 2, 3]
    assert [r["step"] for r in report["log_history"] if "train_runtime" in r] == [4]


def test_retrieval_hubs_script_reproduces_the_runs_retrieval(pretrained_run, tmp_path):
    """`benchmarks/retrieval_hubs.py`: its raw top-1 retrieval of both checkpoints equals the run's own report (same
    facts, same exclusion of the fact's own document), and centring gives a figure of its own."""
    output = tmp_path / "hubs.json"
    _python(str(REPO_ROOT / "benchmarks" / "retrieval_hubs.py"), "--run_dirs", str(pretrained_run),
            "--output", str(output))  # fmt: skip
    rows = json.loads(output.read_text())["results"]
    report = json.loads((pretrained_run / "report.json").read_text())
    assert [row["checkpoint"] for row in rows] == ["warm-start", "final"]
    for row, reported in zip(rows, (report["before"], report["after"])):
        assert row["eval"]["raw"]["retrieval_accuracy"] == pytest.approx(reported["retrieval_accuracy"])
        assert row["held_out"]["raw"]["retrieval_accuracy"] == pytest.approx(reported["held_out_retrieval_accuracy"])
        for split in ("eval", "held_out"):
            assert 0.0 < row[split]["centred"]["top3_hub_share"] <= 1.0
        assert 0.0 <= row["mean_query_norm_ratio"] <= 1.0 + 1e-6
