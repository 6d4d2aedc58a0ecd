"""Conversion of original transformers REALM checkpoints (`pytorch_model.bin`, `block_records.npy`) to realm_hf."""

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch
from huggingface_hub import metadata_load
from safetensors import safe_open
from safetensors.torch import load_file

from realm_hf import RealmForOpenQA, RealmReader
from realm_hf.hub.convert import add_convert_arguments, convert_legacy_checkpoint, main
from realm_hf.hub.publish import load_realm


REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"
OPENQA = REFERENCE / "openqa" / "legacy_bin"
READER = REFERENCE / "reader" / "legacy_bin"


def answer_questions(model, tokenizer) -> list[dict]:
    questions = json.loads((REFERENCE / "openqa" / "questions.json").read_text())
    results = []
    for question in questions:
        inputs = tokenizer([question["question"]], return_tensors="pt")
        with torch.no_grad():
            output = model(**inputs)
        results.append(
            {
                "predicted_answer_ids": output.predicted_answer_ids.tolist(),
                "retrieved_block_ids": output.retrieved_block_ids[0].tolist(),
                "retrieved_logits": output.retrieved_logits[0],
            }
        )
    return results


@pytest.fixture(scope="module")
def converted_openqa(tmp_path_factory) -> Path:
    return convert_legacy_checkpoint(OPENQA, tmp_path_factory.mktemp("converted") / "openqa", allow_pickle=True)


def test_converted_openqa_layout(converted_openqa):
    files = {p.relative_to(converted_openqa).as_posix() for p in converted_openqa.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "README.md"} <= files
    assert {"index/index_config.json", "index/embeddings.npy"} <= files
    assert not {"pytorch_model.bin", "block_records.npy"} & files
    assert not any(name.endswith((".bin", ".npy")) and name != "index/embeddings.npy" for name in files)
    with safe_open(converted_openqa / "model.safetensors", framework="pt") as handle:
        keys = list(handle.keys())
    assert "block_emb" not in keys and not any("position_ids" in key for key in keys)
    assert json.loads((converted_openqa / "config.json").read_text())["architectures"] == ["RealmForOpenQA"]
    metadata = metadata_load(converted_openqa / "README.md")
    assert metadata["library_name"] == "realm_hf" and metadata["tags"][:3] == ["realm", "retrieval", "open-domain-qa"]
    readme = (converted_openqa / "README.md").read_text()
    assert "| Blocks | 8 |" in readme and "| Embedding dimension | 16 |" in readme and "# openqa" in readme
    # No temporary directories left next to the output.
    assert [p.name for p in converted_openqa.parent.iterdir()] == ["openqa"]


def test_converted_openqa_gives_identical_answers(converted_openqa):
    legacy_model, legacy_tokenizer, legacy_retriever = load_realm(OPENQA, allow_pickle=True)
    model, tokenizer, retriever = load_realm(converted_openqa)
    assert isinstance(model, RealmForOpenQA) and model.retriever is retriever is not None
    assert legacy_retriever is not None and legacy_model.retriever is legacy_retriever
    assert list(retriever.index.corpus["text"]) == json.loads((REFERENCE / "openqa" / "blocks.json").read_text())

    before = answer_questions(legacy_model, legacy_tokenizer)
    after = answer_questions(model, tokenizer)
    expected = json.loads((REFERENCE / "openqa" / "expected.json").read_text())["questions"]
    for old, new, reference in zip(before, after, expected):
        assert new["predicted_answer_ids"] == old["predicted_answer_ids"] == reference["predicted_answer_ids"]
        assert new["retrieved_block_ids"] == old["retrieved_block_ids"] == reference["retrieved_block_ids"]
        # Not bitwise: safetensors tensors are memory-mapped at 8-byte (not 64-byte) aligned addresses, which makes
        # the CPU matmul kernels round differently in the last bit (same weights, same inputs).
        torch.testing.assert_close(new["retrieved_logits"], old["retrieved_logits"], atol=1e-5, rtol=0)


def test_legacy_block_records_need_the_pickle_opt_in(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="realm_hf"):
        model, tokenizer, retriever = load_realm(OPENQA)
    assert isinstance(model, RealmForOpenQA) and tokenizer is not None and retriever is None
    assert "allow_pickle=True" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="realm_hf"):
        out = convert_legacy_checkpoint(OPENQA, tmp_path / "no_index")
    assert not (out / "index").exists() and (out / "model.safetensors").is_file()
    assert "NOT converted" in caplog.text and "allow_pickle=True" in caplog.text

    with pytest.raises(ValueError, match="allow_pickle=True"):
        convert_legacy_checkpoint(OPENQA, tmp_path / "explicit", block_records=OPENQA / "block_records.npy")
    assert not (tmp_path / "explicit").exists()


def test_convert_reader_without_tokenizer_or_index(tmp_path):
    out = convert_legacy_checkpoint(READER, tmp_path / "reader")
    model, tokenizer, retriever = load_realm(out)
    assert isinstance(model, RealmReader) and tokenizer is None and retriever is None
    legacy = RealmReader.from_pretrained(READER).eval()
    data = load_file(REFERENCE / "reader" / "inputs_outputs.safetensors")
    inputs = {k: data[k] for k in ("input_ids", "attention_mask", "token_type_ids", "relevance_score", "block_mask")}
    with torch.no_grad():
        expected, actual = legacy(**inputs), model(**inputs)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-5, rtol=0)
    assert torch.equal(actual.start_pos, expected.start_pos) and torch.equal(actual.end_pos, expected.end_pos)


def test_overwrite_is_explicit_and_atomic(tmp_path):
    out = tmp_path / "reader"
    convert_legacy_checkpoint(READER, out)
    (out / "stale.txt").write_text("from an earlier run")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_legacy_checkpoint(READER, out)
    assert (out / "stale.txt").exists()
    convert_legacy_checkpoint(READER, out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["reader"]


def test_command_line(tmp_path, capsys):
    assert main([str(OPENQA), str(tmp_path / "cli"), "--allow-pickle"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "index" / "index_config.json").is_file()
    assert main([str(READER), str(tmp_path / "cli")]) == 1  # not empty, no --overwrite

    parser = argparse.ArgumentParser(prog="realm-hf")
    add_convert_arguments(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", str(READER), str(tmp_path / "cli"), "--overwrite"])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["architectures"] == ["RealmReader"]


def test_finetune_a_converted_checkpoint_on_your_own_question_files(converted_openqa, tmp_path, capsys):
    """`realm-hf finetune MODEL --train_file Q.jsonl --eval_file Q2.jsonl` fine-tunes a converted legacy checkpoint
    with TrainingArguments options, evaluates before and after, and saves a model that loads with its index."""
    from realm_hf.cli import main

    train = [{"question": "what is the capital of france?", "answers": ["paris"]},
             {"question": "what is the capital of germany?", "answer": "berlin"},
             {"question": "what is the capital of england?", "answers": ["london"]},
             {"question": "who was a computer scientist?", "answers": ["alan mathison turing", "turing"]}]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in train))
    (tmp_path / "eval.jsonl").write_text(json.dumps({"question": "what is the longest river?", "answer": ["nile"]}))
    output = tmp_path / "finetuned"
    code = main(["finetune", str(converted_openqa), "--train_file", str(tmp_path / "train.jsonl"),
                 "--eval-file", str(tmp_path / "eval.jsonl"), "--output_dir", str(output), "--max_steps", "3",
                 "--per_device_train_batch_size", "2", "--learning_rate", "1e-4", "--save_steps", "2",
                 "--report_to", "none", "--disable_tqdm", "True"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads((output / "finetune_report.json").read_text())
    assert report["global_step"] == 3 and report["num_train_questions"] == 4 and report["num_eval_questions"] == 1
    assert set(report["before"]) == set(report["after"]) and "exact_match" in report["after"]
    assert (output / "checkpoint-2").is_dir() and not (output / "checkpoint-2" / "index").exists()
    loaded = RealmForOpenQA.from_pretrained(output)
    assert len(loaded.retriever.index) == 8  # the converted checkpoint's index came along
    before = RealmForOpenQA.from_pretrained(converted_openqa)
    changed = [n for n, p in loaded.reader.named_parameters() if not torch.equal(p, before.reader.get_parameter(n))]
    assert changed  # it trained

    assert main(["finetune", str(converted_openqa), "--train_file", str(tmp_path / "train.jsonl"),
                 "--question_column", "query", "--output_dir", str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "has no 'query' column" in capsys.readouterr().err and not (tmp_path / "bad").exists()
