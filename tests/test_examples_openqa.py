"""Smoke tests of examples/evaluate_openqa.py and examples/finetune_openqa_accelerate.py on the tiny open-QA model."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, PartialState
from safetensors.torch import load_file

from realm_hf import RealmForOpenQA, RealmIndex, load_realm, save_realm

from .utils import REFERENCE, load_example, openqa_retriever


REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"
QUESTIONS = json.loads((REFERENCE / "openqa" / "questions.json").read_text())


@pytest.fixture
def saved_model(tmp_path, openqa_tokenizer, blocks) -> Path:
    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    model = RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors", retriever=retriever)
    return save_realm(tmp_path / "model", model, openqa_tokenizer, retriever)


def write_nq(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"question": r["question"], "answer": r["answers"]}) + "\n" for r in rows))
    return path


def test_evaluate_openqa_example(saved_model, tmp_path):
    questions = write_nq(tmp_path / "nq.jsonl", [*QUESTIONS, {"question": "who?", "answers": ["nobody at all"]}])
    trec = tmp_path / "trec.tsv"
    trec.write_text("1\tfactoid\twhat is the capital of france?\tpar(is\n2\tfactoid\twho wrote it?\t[Aa]lan\n")
    example = load_example("evaluate_openqa")
    report = example.main(
        [str(saved_model), "--dataset", "nq", "--questions", str(questions), "--batch_size", "2",
         "--output", str(tmp_path / "nq.json"), "--save_predictions"]
    )  # fmt: skip
    written = json.loads((tmp_path / "nq.json").read_text())
    assert written["metrics"] == report["metrics"] and written["metrics"]["num_questions"] == len(QUESTIONS) + 1
    assert len(written["predictions"]) == len(QUESTIONS) + 1 and written["failed_questions"] == []
    assert written["num_blocks"] == 8 and written["questions_per_s"] > 0
    # The same questions answered directly give the same predictions.
    model, tokenizer, _ = load_realm(saved_model)
    from realm_hf import answer_questions

    direct = answer_questions(model, tokenizer, [q["question"] for q in QUESTIONS])
    assert [p["prediction"] for p in written["predictions"][:-1]] == [a.answer for a in direct]

    trec_report = example.main(
        [str(saved_model), "--dataset", "curatedtrec", "--questions", str(trec), "--output", str(tmp_path / "t.json")]
    )
    assert trec_report["metrics"]["num_regex_questions"] == 2 and trec_report["metrics"]["num_invalid_regex"] == 1


@pytest.fixture
def fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def test_finetune_openqa_accelerate_example(saved_model, tmp_path, fresh_accelerate_state):
    train = write_nq(tmp_path / "train.jsonl", QUESTIONS)
    before, _, _ = load_realm(saved_model)
    index_before = np.array(before.retriever.index.embeddings, copy=True)
    example = load_example("finetune_openqa_accelerate")
    report = example.main(
        ["--model", str(saved_model), "--train_file", str(train), "--dataset", "nq", "--eval_file", str(train),
         "--output_dir", str(tmp_path / "out"), "--max_steps", "3", "--per_device_batch_size", "2",
         "--gradient_accumulation_steps", "2", "--learning_rate", "1e-3", "--cpu", "--logging_steps", "1"]
    )  # fmt: skip
    assert report["global_step"] == 3 and report["num_processes"] == 1
    assert len(report["losses"]) == 3 and all(math.isfinite(loss) for loss in report["losses"])
    assert report["eval"]["num_questions"] == len(QUESTIONS)
    assert json.loads((tmp_path / "out" / "finetune_report.json").read_text())["global_step"] == 3
    after, _, retriever = load_realm(tmp_path / "out" / "final")
    changed = {
        prefix: any(
            not torch.equal(p, dict(before.named_parameters())[n])
            for n, p in after.named_parameters()
            if n.startswith(prefix)
        )
        for prefix in ("embedder.realm.", "embedder.cls.dense.", "reader.qa_outputs.")
    }
    assert all(changed.values()), changed
    np.testing.assert_array_equal(retriever.index.embeddings, index_before)  # block embeddings stay fixed


# These get an exactly-zero gradient (a softmax is invariant to adding the same number to every logit); AdamW turns
# their rounding noise into full-size updates, so they are not comparable between runs.
SHIFT_INVARIANT = ("attention.self.key.bias", "qa_outputs.dense_output.bias", "qa_outputs.layer_normalization.bias")


def finetune_accelerate_runs(tmp_path, openqa_tokenizer, blocks, runs: dict[str, tuple[int, list[str]]]) -> dict:
    """Runs `examples/finetune_openqa_accelerate.py` (2 steps of 4 questions, no dropout) once per entry of `runs`
    (name -> (processes, extra options)); returns each run's report and final parameters."""
    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    model = RealmForOpenQA.from_pretrained(
        REFERENCE / "openqa" / "safetensors", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    saved_model = save_realm(tmp_path / "model", model, openqa_tokenizer, retriever)
    extra = [
        {"question": "what is the capital of england?", "answers": ["london"]},
        {"question": "who was running?", "answers": ["the cute cat"]},
        {"question": "what are pets?", "answers": ["cats and dogs"]},
    ]
    train = write_nq(tmp_path / "train.jsonl", QUESTIONS + extra)  # 8 questions: two full global batches of 4
    script = str(EXAMPLES / "finetune_openqa_accelerate.py")
    common = ["--model", str(saved_model), "--train_file", str(train), "--max_steps", "2", "--cpu",
              "--learning_rate", "1e-3", "--seed", "3"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    results = {}
    for name, (processes, options) in runs.items():
        launcher = [sys.executable]
        if processes > 1:
            launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        command = [*launcher, script, *common, "--per_device_batch_size", str(4 // processes), *options,
                   "--output_dir", str(tmp_path / name)]  # fmt: skip
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = (
            json.loads((tmp_path / name / "finetune_report.json").read_text()),
            load_file(tmp_path / name / "final" / "model.safetensors"),
        )
    return results


def assert_same_finetuning(first: tuple[dict, dict], second: tuple[dict, dict]) -> None:
    """The same losses, and the same parameters (all but the shift-invariant ones), to 1e-5."""
    np.testing.assert_allclose(second[0]["losses"], first[0]["losses"], atol=1e-5)
    compared = [name for name in first[1] if not name.endswith(SHIFT_INVARIANT)]
    assert len(compared) > 0.9 * len(first[1])
    for name in compared:
        torch.testing.assert_close(second[1][name], first[1][name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.slow
@pytest.mark.distributed
def test_finetune_openqa_accelerate_two_processes_match_one(tmp_path, openqa_tokenizer, blocks):
    """2 CPU processes (torchrun, gloo) x 2 questions take the same steps as 1 process x 4 questions (no dropout)."""
    runs = finetune_accelerate_runs(tmp_path, openqa_tokenizer, blocks, {"one": (1, []), "two": (2, [])})
    assert runs["one"][0]["num_processes"] == 1 and runs["two"][0]["num_processes"] == 2
    assert runs["two"][0]["global_step"] == 2
    assert_same_finetuning(runs["one"], runs["two"])


@pytest.mark.distributed
def test_finetune_openqa_accelerate_on_a_sharded_index_matches_the_whole_index(tmp_path, openqa_tokenizer, blocks):
    """Open-QA fine-tuning over 2 processes, each holding half of the block embeddings (`--sharded_index`: searches
    and the embeddings of the retrieved blocks are collective): the same steps as with the whole index in each."""
    runs = finetune_accelerate_runs(
        tmp_path, openqa_tokenizer, blocks, {"whole": (2, []), "sharded": (2, ["--sharded_index"])}
    )
    assert runs["sharded"][0]["num_processes"] == 2 and runs["sharded"][0]["global_step"] == 2
    assert_same_finetuning(runs["whole"], runs["sharded"])
    assert RealmIndex.from_pretrained(tmp_path / "sharded" / "final" / "index").embeddings.shape[0] == len(blocks)


def test_every_option_of_the_package_and_the_examples_has_help_text():
    """Every argument dataclass (`realm-hf pretrain`, ICT, pre-training and the example scripts) explains each knob in
    `--help`."""
    import dataclasses

    from realm_hf.demo.job import DemoArguments
    from realm_hf.demo.openqa import FinetuneArguments
    from realm_hf.training.corpus_pretraining import CorpusArguments, CorpusModelArguments
    from realm_hf.training.ict import InverseClozeTaskArguments
    from realm_hf.training.pretraining import RealmPreTrainingArguments

    classes = [DemoArguments, FinetuneArguments, CorpusArguments, CorpusModelArguments, InverseClozeTaskArguments,
               RealmPreTrainingArguments]  # fmt: skip
    for path in sorted(EXAMPLES.glob("*.py")):
        module = load_example(path.stem)
        classes += [
            value
            for value in vars(module).values()
            if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == path.stem
        ]
    assert len(classes) > 3
    missing = [
        f"{cls.__name__}.{field.name}"
        for cls in classes
        for field in dataclasses.fields(cls)
        if not field.metadata.get("help")
    ]
    assert not missing, f"options without help text: {missing}"
