"""`realm-hf pretrain --corpus`: REALM pre-training on the user's own documents, from random weights, a REALM
checkpoint or a BERT checkpoint; the embedded world stays the default."""

import json

import pytest
import torch
from transformers import AutoModelForPreTraining, BertConfig, BertForMaskedLM, BertTokenizerFast

from realm_hf import RealmForPreTraining, RealmRetriever
from realm_hf.cli import main
from realm_hf.demo.job import build_tokenizer
from realm_hf.demo.synthetic import make_synthetic_knowledge


SMALL = ["--max_steps", "2", "--batch_size", "4", "--hidden_size", "32", "--num_hidden_layers", "1",
         "--max_block_length", "64", "--query_max_length", "32", "--retriever_proj_size", "16",
         "--index_refresh_steps", "1", "--no_show_progress"]  # fmt: skip


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    """A small world's documents as a JSON lines file (title and text), and a tokenizer of its words."""
    root = tmp_path_factory.mktemp("corpus")
    knowledge = make_synthetic_knowledge(num_people=6, num_cities=2, seed=0)
    path = root / "documents.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for row in knowledge.documents:
            handle.write(json.dumps({"title": row["title"], "text": row["text"]}) + "\n")
    build_tokenizer(knowledge.vocabulary(), root / "tokenizer")
    return path, root / "tokenizer", len(knowledge.documents)


def test_pretrain_on_a_corpus_from_random_weights_then_from_its_checkpoint(tmp_path, documents, capsys):
    path, tokenizer_dir, num_documents = documents
    out = tmp_path / "run"
    code = main(["pretrain", "--corpus", str(path), "--tokenizer_name", str(tokenizer_dir), "--output_dir", str(out),
                 "--ict_steps", "2", *SMALL])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 2 and report["blocks"] >= num_documents
    assert [r["step"] for r in report["history"] if "loss" in r][-1] == 2
    model = AutoModelForPreTraining.from_pretrained(out / "final")
    assert isinstance(model, RealmForPreTraining) and model.config.hidden_size == 32
    retriever = RealmRetriever.from_pretrained(out / "final")
    assert len(retriever.index) == report["blocks"]
    assert "final" in capsys.readouterr().out

    # From that checkpoint: its size and weights, not --hidden_size's (the CLI default is 128).
    again = tmp_path / "again"
    code = main(["pretrain", "--corpus", str(path), "--init_from", str(out / "final"), "--output_dir", str(again),
                 "--max_steps", "1", "--batch_size", "4", "--learning_rate", "0", "--retriever_learning_rate", "0",
                 "--index_refresh_steps", "0", "--ict_steps", "0", "--no_show_progress"])  # fmt: skip
    assert code == 0
    continued = RealmForPreTraining.from_pretrained(again / "final")
    assert continued.config.hidden_size == 32
    for name, tensor in model.state_dict().items():  # learning rate 0: the checkpoint's weights, unchanged
        torch.testing.assert_close(continued.state_dict()[name], tensor, msg=name)


def test_pretrain_on_a_corpus_from_bert(tmp_path, documents):
    path, tokenizer_dir, _ = documents
    bert_dir = tmp_path / "bert"
    tokenizer = BertTokenizerFast(vocab_file=str(tokenizer_dir / "vocab.txt"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    bert = BertForMaskedLM(config)
    bert.save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    out = tmp_path / "from-bert"
    assert (
        main(["pretrain", "--corpus", str(path), "--init_from", str(bert_dir), "--output_dir", str(out), *SMALL]) == 0
    )
    model = RealmForPreTraining.from_pretrained(out / "final")
    assert model.config.hidden_size == 48 and model.config.retriever_proj_size == 16


def test_pretrain_refuses_options_that_do_not_apply(tmp_path, documents, capsys):
    path, tokenizer_dir, _ = documents
    common = ["--output_dir", str(tmp_path / "x"), "--no_show_progress"]
    assert main(["pretrain", "--corpus", str(path), "--tokenizer_name", str(tokenizer_dir), "--num_people", "5",
                 *common]) == 2  # fmt: skip
    assert "--num_people" in capsys.readouterr().err
    assert main(["pretrain", "--init_from", str(tmp_path), *common]) == 2
    assert "only apply with --corpus" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs a tokenizer"):
        main(["pretrain", "--corpus", str(path), *common])
    assert not (tmp_path / "x").exists()
