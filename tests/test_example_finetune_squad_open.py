"""Smoke test of examples/finetune_openqa.py (SQuAD-open fine-tuning) on a tiny BERT and a hand-made SQuAD-open."""

import json
import sys

import pytest
import torch
from transformers import BertConfig, BertModel
from transformers.utils import logging

from .utils import TINY_VOCAB, load_example


PASSAGES = [
    ("Paris", "paris is the capital city of france ."),
    ("Berlin", "berlin is the capital city of germany ."),
    ("Rome", "rome is the capital city of italy ."),
    ("Alan_Turing", "alan turing was a computer scientist born in london , england ."),
    ("Ada_Lovelace", "ada lovelace was a mathematician and poet born in london ."),
    ("London", "london is the capital city of england ."),
]
QUESTIONS = [
    ("what is the capital of france ?", "paris", "Paris"),
    ("what is the capital of germany ?", "berlin", "Berlin"),
    ("what is the capital of italy ?", "rome", "Rome"),
    ("who was a computer scientist ?", "alan turing", "Alan_Turing"),
    ("who was a poet ?", "ada lovelace", "Ada_Lovelace"),
    ("what is the capital of england ?", "london", "London"),
]


@pytest.fixture
def squad_open_dir(tmp_path):
    """A SQuAD-open directory in the layout of the real one: passages, train and dev question files."""
    data = tmp_path / "squad_open"
    data.mkdir()
    rows = [{"id": f"{title}_0", "title": title, "text": text} for title, text in PASSAGES]
    (data / "passages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = [
        {"id": str(i), "question": q, "answers": [a], "title": title, "passage_id": f"{title}_0"}
        for i, (q, a, title) in enumerate(QUESTIONS)
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (data / "dev.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions[:4]))
    return data


@pytest.fixture
def tiny_bert_dir(tmp_path):
    """A BERT checkpoint with its vocabulary, as `--init_from` expects."""
    path = tmp_path / "bert"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return path


def _run(example, monkeypatch, data_dir, bert_dir, output_dir, card_dir) -> dict:
    argv = ["finetune_openqa.py", "--data_dir", str(data_dir), "--init_from", str(bert_dir),
            "--passages_file", "passages.jsonl", "--train_file", "train.jsonl", "--eval_file", "dev.jsonl",
            "--output_dir", str(output_dir), "--card_dir", str(card_dir), "--max_block_length", "16",
            "--retriever_proj_size", "16", "--searcher_beam_size", "4", "--reader_beam_size", "2",
            "--reader_seq_len", "32", "--max_steps", "3", "--per_device_train_batch_size", "2",
            "--learning_rate", "1e-3", "--logging_steps", "1", "--eval_batch_size", "2", "--save_strategy", "no",
            "--report_to", "none", "--use_cpu", "True", "--seed", "7", "--save_final", "False",
            "--attention_probs_dropout_prob", "0.0"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    verbosity = logging.get_verbosity()
    try:
        example.main()
    finally:
        logging.set_verbosity(verbosity)
    return json.loads((output_dir / "openqa_report.json").read_text())


def test_finetune_squad_open_example_reports_and_is_reproducible(
    squad_open_dir, tiny_bert_dir, tmp_path, monkeypatch, capsys
):
    example = load_example("finetune_openqa")
    first = _run(example, monkeypatch, squad_open_dir, tiny_bert_dir, tmp_path / "out1", tmp_path / "card")
    second = _run(example, monkeypatch, squad_open_dir, tiny_bert_dir, tmp_path / "out2", tmp_path / "card2")

    assert first["num_blocks"] >= len(PASSAGES) and first["num_train_questions"] == len(QUESTIONS)
    assert first["num_eval_questions"] == 4 and first["global_step"] == 3
    for stage in ("before", "after"):
        assert first[stage]["num_questions"] == 4 and first[stage]["num_failed"] == 0
        assert 0.0 <= first[stage]["gold_recall_at_1"] <= first[stage]["gold_recall_at_5"] <= 1.0
    # The new heads start from the seed: the same losses in both runs (not so without seeding before the init).
    losses = [[row["loss"] for row in report["log_history"] if "loss" in row] for report in (first, second)]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    assert first["before"] == {**second["before"], "seconds": first["before"]["seconds"]}
    # The report names the checkpoint by a variable, not by a path of this machine.
    assert '--init_from "$INIT_FROM"' in first["command"] and str(tmp_path) not in first["command"]
    assert first["bf16"] is False and first["machine"]["cpu_count"] >= 1
    # Dropout: the given attention dropout, the checkpoint's hidden dropout.
    assert first["dropout"] == {"hidden": 0.1, "attention_probs": 0.0}

    card = (tmp_path / "card" / "README.md").read_text()
    summary = example.before_after_summary(first)
    assert summary in card and "Before -> after fine-tuning" in summary
    before, after = first["before"]["gold_recall_at_5"], first["after"]["gold_recall_at_5"]
    assert f"@5 {before:.3f} -> {after:.3f}" in summary
    assert "exact_match" in card and "Gold passage recall@5" in card
    assert "`training_questions_seen`: 6 (1.00 epochs of 6 questions)" in card
    assert "`attention_probs_dropout_prob`: 0\n" in card and "`hidden_dropout_prob`: 0.1\n" in card
