"""answer_questions and `realm-hf ask` on the reference open-QA fixture."""

import json
import os
import subprocess
import sys

import pytest

from realm_hf import RealmForOpenQA, save_realm
from realm_hf.cli import main
from realm_hf.inference import answer_questions

from .utils import REFERENCE, REPO_ROOT, openqa_retriever


def _model(openqa_tokenizer, blocks):
    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    return RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors", retriever=retriever).eval()


def test_answers_match_the_reference_and_bad_questions_do_not_stop_the_batch(openqa_tokenizer, blocks):
    questions = json.loads((REFERENCE / "openqa" / "expected.json").read_text())["questions"]
    model = _model(openqa_tokenizer, blocks)
    texts = [q["question"] for q in questions]
    answers = answer_questions(model, openqa_tokenizer, [texts[0], "", texts[1], "   ", *texts[2:]], batch_size=2)
    good = [a for a in answers if a.error is None]
    expected = [openqa_tokenizer.decode(q["predicted_answer_ids"], skip_special_tokens=True) for q in questions]
    assert [a.answer for a in good] == expected
    assert [a.error for a in answers[1:4:2]] == ["empty question", "empty question"]
    for answer in good:
        assert answer.evidence == blocks[answer.block_id]
        assert answer.score > -1e30


def test_cli_ask(tmp_path, openqa_tokenizer, blocks, capsys):
    model = _model(openqa_tokenizer, blocks)
    save_realm(tmp_path / "model", model, openqa_tokenizer, model.retriever)
    question = json.loads((REFERENCE / "openqa" / "expected.json").read_text())["questions"][1]
    assert main(["ask", str(tmp_path / "model"), question["question"]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert lines[0]["answer"] == openqa_tokenizer.decode(question["predicted_answer_ids"], skip_special_tokens=True)
    assert main(["ask", str(tmp_path / "model")]) == 2


def test_cli_index_builds_the_index_a_model_searches(tmp_path, openqa_tokenizer, blocks, capsys):
    """`realm-hf index MODEL CORPUS OUTPUT` splits documents into blocks, embeds them with the checkpoint's document
    tower and saves an index whose embeddings and fingerprint are that tower's; corpora come as JSON lines (no
    titles) or CSV (with titles); an unknown file type is refused by name."""
    import csv

    import numpy as np

    from realm_hf import RealmIndex
    from realm_hf.retrieval.embedding import embed_corpus

    model_dir = REFERENCE / "openqa" / "safetensors"
    model = RealmForOpenQA.from_pretrained(model_dir).eval()
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": text}) for text in blocks) + "\n")
    assert main(["index", str(model_dir), str(jsonl), str(tmp_path / "index"), "--no-progress"]) == 0
    index = RealmIndex.from_pretrained(tmp_path / "index")
    assert list(index.corpus["text"]) == list(blocks)
    assert index.check_embedder(model.embedder)
    expected = embed_corpus(model.embedder, index.corpus, openqa_tokenizer, show_progress=False)
    np.testing.assert_allclose(np.asarray(index.embeddings), expected, rtol=1e-5, atol=1e-5)

    with open(tmp_path / "docs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "text"])
        writer.writerows([("alan turing", blocks[0]), ("the nile", blocks[3])])
    assert main(["index", str(model_dir), str(tmp_path / "docs.csv"), str(tmp_path / "titled"), "--no-progress"]) == 0
    titled = RealmIndex.from_pretrained(tmp_path / "titled")
    assert list(titled.corpus["title"]) == ["alan turing", "the nile"] and len(titled) == 2

    (tmp_path / "docs.txt").write_text(blocks[0])
    assert main(["index", str(model_dir), str(tmp_path / "docs.txt"), str(tmp_path / "never"), "--no-progress"]) == 2
    assert "realm-hf index: error: " in (err := capsys.readouterr().err) and "unknown document file type '.txt'" in err


@pytest.mark.distributed
def test_cli_index_over_two_processes_builds_the_single_process_index(tmp_path, blocks):
    """`torchrun --nproc_per_node 2 -m realm_hf.cli index ...`: each process embeds a share of the blocks, the main
    one saves; the index equals the one a single process builds."""
    import numpy as np

    from realm_hf import RealmIndex

    model_dir = REFERENCE / "openqa" / "safetensors"
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": text}) for text in blocks) + "\n")
    assert main(["index", str(model_dir), str(jsonl), str(tmp_path / "one"), "--no-progress"]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "realm_hf.cli", "index",
               str(model_dir), str(jsonl), str(tmp_path / "two"), "--no-progress"]  # fmt: skip
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count('"blocks"') == 1  # one process reports and saves
    one, two = RealmIndex.from_pretrained(tmp_path / "one"), RealmIndex.from_pretrained(tmp_path / "two")
    np.testing.assert_allclose(np.asarray(two.embeddings), np.asarray(one.embeddings), atol=1e-5)
    assert list(two.corpus["text"]) == list(one.corpus["text"])


@pytest.mark.distributed
def test_cli_ask_over_two_processes_writes_the_single_process_answers_in_order(tmp_path, openqa_tokenizer, blocks):
    """`torchrun --nproc_per_node 2 -m realm_hf.cli ask ...`: each process answers a share of the questions (3: an
    uneven split), the main one prints them all once, in the questions' order, as one process would."""
    model = _model(openqa_tokenizer, blocks)
    save_realm(tmp_path / "model", model, openqa_tokenizer, model.retriever)
    questions = [q["question"] for q in json.loads((REFERENCE / "openqa" / "expected.json").read_text())["questions"]]
    questions_file = tmp_path / "questions.txt"
    questions_file.write_text("".join(f"{q}\n" for q in questions[:3]))
    args = ["ask", str(tmp_path / "model"), "--questions-file", str(questions_file), "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "one.jsonl")]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "realm_hf.cli", *args]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    one = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]  # printed once
    assert [row["question"] for row in two] == questions[:3]
    assert [row["answer"] for row in two] == [row["answer"] for row in one]
    assert [row["block_id"] for row in two] == [row["block_id"] for row in one]


def test_cli_index_refuses_a_bad_factory_before_embedding(tmp_path, blocks, capsys, monkeypatch):
    """`realm-hf index --index-factory`: a string FAISS cannot build, or more IVF lists than the corpus has blocks, is
    refused as `realm-hf index: error: ...` with exit code 2, before any block is embedded and nothing is written."""
    from realm_hf.retrieval import index as index_module

    def never(*args, **kwargs):
        raise AssertionError("embedded before the factory was checked")

    monkeypatch.setattr(index_module, "embed_corpus", never)
    model_dir = REFERENCE / "openqa" / "safetensors"
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": text}) for text in blocks) + "\n")
    for factory, message in (("NotAFactory", "NotAFactory"), ("IVF4096,Flat", "IVF lists")):
        out = tmp_path / "never"
        assert main(["index", str(model_dir), str(jsonl), str(out), "--index-factory", factory, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("realm-hf index: error: ") and message in err and "Traceback" not in err
        assert not out.exists()
