"""`benchmarks/realm_real_text.py` end to end at a reduced size: the real SQuAD-open passages and questions, a tiny
`BertForMaskedLM` built here (the benchmark's BERT-tiny is a benchmark-only install)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast


REPO_ROOT = Path(__file__).resolve().parents[1]
SQUAD_OPEN = REPO_ROOT.parent / "shared" / "data" / "squad_open"
VOCAB = REPO_ROOT.parent / "shared" / "data" / "bert_uncased_vocab" / "vocab.txt"


@pytest.mark.slow
@pytest.mark.skipif(not (SQUAD_OPEN.is_dir() and VOCAB.is_file()), reason="the shared SQuAD-open data is not here")
def test_real_text_pipeline_runs_end_to_end(tmp_path):
    bert = tmp_path / "bert"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)  # fmt: skip
    BertForMaskedLM(config).save_pretrained(bert)
    BertTokenizerFast(vocab=str(VOCAB), do_lower_case=True).save_pretrained(bert)
    output = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "realm_real_text.py"), "--data_dir", str(SQUAD_OPEN),
         "--init_from", str(bert), "--max_passages", "150", "--max_dev_questions", "24", "--max_train_questions", "32",
         "--block_length", "128", "--reading_steps", "4", "--ict_steps", "4", "--batch_size", "8",
         "--arm_seconds", "5", "--realm_batch_size", "4", "--refresh_steps", "2", "--eval_sentences", "16",
         "--eval_steps", "2", "--finetune_steps", "2", "--finetune_batch_size", "4", "--searcher_beam_size", "4",
         "--reader_beam_size", "2", "--threads", "2", "--output", str(output)],
        check=True, cwd=REPO_ROOT, timeout=900,
    )  # fmt: skip
    result = json.loads(output.read_text())
    reading = result["runs"][0]["start"]["reading"]
    assert reading["masked_tokens"] > 0 and reading["masked_lm_accuracy_own_document"] < 0.5  # real words, untrained
    assert result["corpus"]["dev_questions"] == 24 and result["corpus"]["passages"] == 150
    for arm in ("ict", "realm"):
        assert 0.0 <= result[arm]["zero_shot_recall_at_5"] <= 1.0
        assert 0.0 <= result[arm]["finetuned_exact_match"] <= 100.0
    run = result["runs"][0]
    assert run["realm"]["steps"] >= 2 and run["ict"]["extra_steps"] >= 20  # both arms trained, ICT for as long
    assert run["ict"]["seconds"] >= run["realm"]["seconds"]
    assert run["ict_step_matched"]["extra_steps"] == run["realm"]["steps"]  # ICT for REALM's update count
    assert 0.0 <= run["ict_step_matched"]["zero_shot"]["gold_recall_at_5"] <= 1.0
    readings = [r for r in run["realm"]["history"] if "masked_lm_accuracy_no_document" in r]
    assert readings and {"masked_lm_accuracy_own_document", "masked_lm_accuracy_retrieved"} <= set(readings[0])
    assert {"masked_lm_accuracy_no_document", "retrieval_utility"} <= set(run["realm"]["reading"])
    assert "<bert>" in result["settings"]["init_from"] and "<squad_open>" in result["settings"]["data_dir"]
