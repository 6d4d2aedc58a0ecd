"""`realm-hf pretrain --corpus`: REALM pre-training on the user's own documents, from random weights, a REALM
checkpoint or a BERT checkpoint; the embedded world stays the default."""

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForPreTraining, BertConfig, BertForMaskedLM, BertTokenizerFast, TrainingArguments

from realm_hf import RealmForPreTraining, RealmRetriever
from realm_hf.cli import main
from realm_hf.demo.job import build_tokenizer
from realm_hf.demo.synthetic import make_synthetic_knowledge

from .utils import PICKLE_ENDINGS, REPO_ROOT, kill_when_hanging


SMALL = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--hidden_size", "32", "--num_hidden_layers", "1",
         "--max_block_length", "64", "--query_max_length", "32", "--retriever_proj_size", "16",
         "--index_refresh_steps", "1", "--disable_tqdm", "True"]  # fmt: skip
HANG_SCRIPT = REPO_ROOT / "tests" / "scripts" / "cli_hang_after_checkpoint.py"


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
                 "--max_steps", "1", "--per_device_train_batch_size", "4", "--learning_rate", "0",
                 "--retriever_learning_rate", "0", "--index_refresh_steps", "0", "--ict_steps", "0",
                 "--disable_tqdm", "True"])  # fmt: skip
    assert code == 0
    continued = RealmForPreTraining.from_pretrained(again / "final")
    assert continued.config.hidden_size == 32
    for name, tensor in model.state_dict().items():  # learning rate 0: the checkpoint's weights, unchanged
        torch.testing.assert_close(continued.state_dict()[name], tensor, msg=name)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, documents):
    """A small random `BertForMaskedLM` with the corpus tokenizer, saved the transformers way."""
    _, tokenizer_dir, _ = documents
    path = tmp_path_factory.mktemp("bert")
    tokenizer = BertTokenizerFast(vocab_file=str(tokenizer_dir / "vocab.txt"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_pretrain_on_a_corpus_from_bert(tmp_path, documents, bert_dir):
    path, _, _ = documents
    out = tmp_path / "from-bert"
    frozen = ["--learning_rate", "0", "--retriever_learning_rate", "0"]  # the model stays what BERT made it
    assert main(["pretrain", "--corpus", str(path), "--init_from", str(bert_dir), "--output_dir", str(out), *SMALL,
                 *frozen]) == 0  # fmt: skip
    model = RealmForPreTraining.from_pretrained(out / "final")
    assert model.config.hidden_size == 48 and model.config.retriever_proj_size == 16
    bert = BertForMaskedLM.from_pretrained(bert_dir).state_dict()
    # Every tower's trunk, and the encoder's masked-LM head, are BERT's weights (they fail if BERT is not loaded).
    for tower in ("embedder", "query_embedder", "encoder"):
        trunk = getattr(model, tower).realm.state_dict()
        for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                     "encoder.layer.0.output.dense.weight", "embeddings.LayerNorm.weight"):  # fmt: skip
            torch.testing.assert_close(trunk[name], bert[f"bert.{name}"], rtol=0, atol=0, msg=f"{tower}.{name}")
    head = model.encoder.cls.state_dict()
    torch.testing.assert_close(
        head["predictions.transform.dense.weight"], bert["cls.predictions.transform.dense.weight"], rtol=0, atol=0
    )


def test_pretrain_on_a_corpus_killed_and_resumed_matches_an_uninterrupted_run(tmp_path, documents, bert_dir):
    """`realm-hf pretrain --corpus ... --gradient_accumulation_steps 2 --save_steps 5 --resume_from_checkpoint
    latest`: killed after its step-5 checkpoint and run again with the same command, it ends with the parameters of
    a run that was never interrupted (dropout on: the random generators are restored too)."""
    path, _, _ = documents

    def command(output_dir):
        return ["pretrain", "--corpus", str(path), "--init_from", str(bert_dir), "--output_dir", str(output_dir),
                "--max_steps", "8", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2",
                "--save_steps", "5", "--resume_from_checkpoint", "latest", "--index_refresh_steps", "3",
                "--max_block_length", "64", "--query_max_length", "32", "--retriever_proj_size", "16",
                "--learning_rate", "1e-3", "--disable_tqdm", "True"]  # fmt: skip

    assert main(command(tmp_path / "full")) == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "REALM_TEST_HANG_AFTER_CHECKPOINT": "5"}
    kill_when_hanging(
        [sys.executable, str(HANG_SCRIPT), *command(killed)], killed / "hanging", env, "its checkpoint 5"
    )
    assert not (killed / "final").exists() and (killed / "checkpoint-5" / "trainer_state.json").is_file()
    assert not [p.name for p in (killed / "checkpoint-5").iterdir() if p.suffix in PICKLE_ENDINGS]

    assert main(command(killed)) == 0
    history = json.loads((killed / "report.json").read_text())["history"]
    assert [r["step"] for r in history if "loss" in r] == [r["step"] for r in json.loads(
        (tmp_path / "full" / "report.json").read_text())["history"] if "loss" in r]  # fmt: skip
    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    resumed = load_file(killed / "final" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name, tensor in full.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    bert = BertForMaskedLM.from_pretrained(bert_dir).state_dict()
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(full[f"encoder.realm.{name}"], bert[f"bert.{name}"]), "training changed nothing"


def test_pretrain_refuses_options_that_do_not_apply(tmp_path, documents, capsys):
    path, tokenizer_dir, _ = documents
    assert main(["pretrain", "--corpus", str(path), "--tokenizer_name", str(tokenizer_dir), "--num_people", "5",
                 "--output_dir", str(tmp_path / "x"), "--disable_tqdm", "True"]) == 2  # fmt: skip
    assert "--num_people" in capsys.readouterr().err
    assert main(["pretrain", "--init_from", str(tmp_path), "--output_dir", str(tmp_path / "x"),
                 "--disable_tqdm", "True"]) == 2  # fmt: skip
    assert "only apply with --corpus" in capsys.readouterr().err
    assert (
        main(["pretrain", "--corpus", str(path), "--output_dir", str(tmp_path / "x"), "--disable_tqdm", "True"]) == 2
    )
    assert "realm-hf pretrain: error:" in (err := capsys.readouterr().err) and "needs a tokenizer" in err
    assert not (tmp_path / "x").exists()


def test_pretrain_on_a_corpus_parses_every_training_argument(tmp_path, documents):
    """`--corpus` parses RealmPreTrainingArguments, a TrainingArguments: bf16, optim, report_to ... are options."""
    from realm_hf import RealmPreTrainingArguments
    from realm_hf.training.corpus_pretraining import corpus_pretraining_parser

    path, tokenizer_dir, _ = documents
    _, _, train_args = corpus_pretraining_parser().parse_args_into_dataclasses(
        ["--corpus", str(path), "--tokenizer_name", str(tokenizer_dir), "--bf16", "True", "--optim", "sgd", "--gradient_accumulation_steps", "4",
         "--save_total_limit", "3", "--report_to", "none", "--output_dir", str(tmp_path), "--use_cpu"]
    )  # fmt: skip
    assert isinstance(train_args, RealmPreTrainingArguments) and isinstance(train_args, TrainingArguments)
    assert train_args.bf16 and train_args.mixed_precision == "bf16" and train_args.optim == "sgd"
    assert train_args.gradient_accumulation_steps == 4 and train_args.save_total_limit == 3
    with pytest.raises(ValueError, match="supports optim"):
        RealmPreTrainingArguments(output_dir=str(tmp_path), optim="adafactor")


def test_pretrain_on_a_corpus_chooses_its_tagger(tmp_path, documents, monkeypatch, capsys):
    """`--tagger` picks the salient-span tagger (its model is loaded before any work); a bad choice is refused."""
    import realm_hf.training.corpus_pretraining as corpus_pretraining
    from realm_hf.training.taggers import RuleBasedTagger

    path, tokenizer_dir, _ = documents
    common = ["pretrain", "--corpus", str(path), "--tokenizer_name", str(tokenizer_dir), "--disable_tqdm", "True"]
    assert main([*common, "--tagger", "ner", "--output_dir", str(tmp_path / "ner")]) == 2
    assert "needs tagger_model" in capsys.readouterr().err
    assert not (tmp_path / "ner").exists()
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main([*common, "--tagger", "regex", "--output_dir", str(tmp_path / "regex")])
    used = []

    class Recording(RuleBasedTagger):
        def __call__(self, texts):
            used.append(len(texts))
            return super().__call__(texts)

    asked = []

    def make_tagger(name, model):
        asked.append((name, model))
        return Recording()

    monkeypatch.setattr(corpus_pretraining, "make_tagger", make_tagger)
    assert main([*common, "--tagger", "spacy", "--tagger_model", "my_pipeline", "--output_dir", str(tmp_path / "run"),
                 *SMALL[:-2]]) == 0  # fmt: skip
    assert asked == [("spacy", "my_pipeline")] and sum(used) > 0


def test_pretrain_on_a_corpus_publishes_a_card_with_its_measured_numbers(tmp_path, documents, hub_server):
    """`--push_to_hub`: the model, tokenizer and index in one commit, and a card with the run's settings and its
    last masked-LM accuracy as a model-index result on the corpus."""
    from huggingface_hub import ModelCard

    path, tokenizer_dir, _ = documents
    out = tmp_path / "pushed"
    assert main(["pretrain", "--corpus", str(path), "--tokenizer_name", str(tokenizer_dir), "--output_dir", str(out),
                 "--push_to_hub", "True", "--hub_model_id", "tester/corpus-realm", *SMALL]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    files = hub_server.list_files("tester/corpus-realm")
    assert {"README.md", "config.json", "model.safetensors", "index/index_config.json"} <= set(files)
    card = ModelCard(hub_server.read_file("tester/corpus-realm", "README.md").decode())
    (result,) = card.data.eval_results
    expected = [r for r in report["history"] if "masked_lm_accuracy" in r][-1]["masked_lm_accuracy"]
    assert result.metric_value == pytest.approx(expected) and result.dataset_split == "train"
    assert "`index_refresh_steps`: 1" in card.content and card.data.base_model is None
