"""The embedded demo (`realm-hf pretrain`) at a tiny size: it runs end to end and reports what it measured."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from realm_hf.cli import main
from realm_hf.demo.job import DemoArguments, run_demo


def test_demo_runs_end_to_end_and_reports(tmp_path):
    args = DemoArguments(
        output_dir=str(tmp_path / "demo"), max_steps=6, ict_steps=4, reading_steps=3, per_device_train_batch_size=8, num_people=8,
        num_cities=3, held_out_fraction=0.25, index_refresh_steps=3, eval_steps=3, num_eval_facts=16, hidden_size=32,
        disable_tqdm=True,
    )  # fmt: skip
    report = run_demo(args)
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["steps"] == 6 and saved["documents"] == 2 * 8 + 3
    assert saved["held_out_facts"] == 2 * 6 and saved["eval_facts"] == 16
    for phase in ("before", "after"):
        assert set(saved[phase]) >= {
            "retrieval_accuracy", "eval_masked_lm_accuracy", "evidence_prior", "evidence_posterior",
            "held_out_retrieval_accuracy", "held_out_masked_lm_accuracy", "reading_accuracy",
            "held_out_reading_accuracy",
        }  # fmt: skip
    assert [r["step"] for r in saved["reading_history"]] == [3]
    assert [r["step"] for r in report["history"] if "retrieval_accuracy" in r] == [3, 6]
    assert all(r["retriever_grad_norm"] > 0 for r in report["history"])
    assert any("index_refresh_seconds" in r for r in report["history"])
    assert report["ict_history"] and (tmp_path / "demo" / "report.png").stat().st_size > 1000


def test_cli_pretrain_arguments(tmp_path, capsys):
    """The demo's options are RealmPreTrainingArguments' (so every TrainingArguments option) and its world's."""
    code = main(["pretrain", "--output_dir", str(tmp_path / "cli"), "--max_steps", "2", "--ict_steps", "0",
                 "--num_people", "4", "--num_cities", "2", "--per_device_train_batch_size", "4", "--eval_steps", "2",
                 "--gradient_accumulation_steps", "2", "--hidden_size", "32", "--num_eval_facts", "8",
                 "--disable_tqdm", "True"])  # fmt: skip
    assert code == 0
    assert '"steps": 2' in capsys.readouterr().out
    # The options reached the run: its saved settings, the model it trained, and when it evaluated.
    run = tmp_path / "cli"
    saved = json.loads((run / "demo_args.json").read_text())
    assert (saved["max_steps"], saved["per_device_train_batch_size"], saved["gradient_accumulation_steps"]) == (
        2,
        4,
        2,
    )
    assert (saved["num_people"], saved["disable_tqdm"], saved["learning_rate"]) == (4, True, 3e-4)  # a demo default
    assert DemoArguments.from_run(run / "demo_args.json").gradient_accumulation_steps == 2
    assert json.loads((run / "final" / "config.json").read_text())["hidden_size"] == 32
    report = json.loads((run / "report.json").read_text())
    assert [r["step"] for r in report["history"] if "retrieval_accuracy" in r] == [2]
    assert report["ict_history"] == []  # --ict_steps 0


@pytest.mark.slow
def test_realm_pretraining_itself_raises_retrieval_over_its_warm_start(tmp_path):
    """The default job (about 8 minutes on 2 CPU cores): REALM pre-training, with the retriever trained by the
    masked-LM signal alone, raises top-1 retrieval of the evidence document from a weak ICT warm start (<= 20%) to
    >= 80% and >= 4x (with the retriever frozen it would stay where the warm start left it), on training and held-out
    sentences, and the encoder reads the held-out facts (masked-LM accuracy >= 50% where nothing was memorised)."""
    report = run_demo(DemoArguments(output_dir=str(tmp_path / "demo"), disable_tqdm=True))
    before, after = report["before"], report["after"]
    assert before["retrieval_accuracy"] <= 0.2
    for key in ("retrieval_accuracy", "held_out_retrieval_accuracy"):
        assert after[key] >= max(4 * before[key], 0.8), (key, before, after)
    assert after["held_out_masked_lm_accuracy"] >= 0.5, after


READING_FIXTURE = Path(__file__).parent / "fixtures" / "reading_warm_start"


def test_realm_pretraining_doubles_retrieval_in_twenty_steps(tmp_path):
    """REALM's own learning, fast (about 60 s on 2 CPU cores): the default world and model, the encoder starting from
    the default job's reading warm start (a fixture: it read other worlds, never a target fact, and holds no embedder;
    the analogue of the paper's BERT), the retriever from its weak 22-step ICT warm start (<= 20% top-1). Twenty REALM
    steps, in which only the marginal masked-LM loss trains the retriever, at least double top-1 retrieval of the
    evidence document on training and on held-out sentences; the same twenty steps with the retriever's learning rate
    at 0 (the control, run here too) leave it where the warm start put it, so the gain is REALM's, not the warm
    start's. A fixture of another vocabulary is refused; `tests/fixtures/make_reading_warm_start.py` regenerates it."""
    results = {}
    for name, retriever_learning_rate in (("realm", 1e-4), ("frozen_retriever", 0.0)):
        args = DemoArguments(
            output_dir=str(tmp_path / name), reader_from=str(READING_FIXTURE), max_steps=20, eval_steps=20,
            retriever_learning_rate=retriever_learning_rate, disable_tqdm=True,
        )  # fmt: skip
        results[name] = run_demo(args)
    before = results["realm"]["before"]
    assert results["frozen_retriever"]["before"] == before
    assert before["retrieval_accuracy"] <= 0.2 and before["held_out_retrieval_accuracy"] <= 0.2, before
    for key in ("retrieval_accuracy", "held_out_retrieval_accuracy"):
        assert results["realm"]["after"][key] >= 2 * before[key], (key, before, results["realm"]["after"])
        assert results["frozen_retriever"]["after"][key] < 1.5 * before[key], (key, results["frozen_retriever"])


def test_realm_pretraining_doubles_retrieval_with_an_index_never_refreshed(tmp_path):
    """The stale-index regime of a real corpus, fast (about 50 s on 2 CPU cores): as the test above, but the index
    built after the warm starts is never refreshed during the twenty steps, and the library's default strategy for a
    stale index (the index's own query-tower snapshot over-retrieves 64 blocks, the live towers re-embed them and keep
    the best, and score them) carries the masked-LM signal.
    What the towers learned, measured against the corpus re-embedded by the final document tower and searched by the
    final query tower, is at least twice the warm start's top-1 retrieval on training and held-out sentences; the
    control (retriever learning rate 0) stays where the warm start put it."""
    results = {}
    for name, retriever_learning_rate in (("realm", 1e-4), ("frozen_retriever", 0.0)):
        args = DemoArguments(
            output_dir=str(tmp_path / name), reader_from=str(READING_FIXTURE), max_steps=20, eval_steps=20,
            index_refresh_steps=0, retriever_learning_rate=retriever_learning_rate, disable_tqdm=True,
        )  # fmt: skip
        assert args.index_search == "auto" and args.retriever_training == "both"  # the defaults: snapshot search,
        assert args.rerank_candidates == 64  # and re-ranking wherever the index goes stale
        results[name] = run_demo(args)
    realm, before = results["realm"], results["realm"]["before"]
    assert not any("index_refresh_seconds" in record for record in realm["history"])
    assert realm["history"][-1]["index_staleness"] == 20
    for key in ("retrieval_accuracy", "held_out_retrieval_accuracy"):
        learned = realm["after"][f"fresh_index_{key}"]
        assert learned >= 2 * before[key], (key, before, realm["after"])
        control = results["frozen_retriever"]["after"]
        assert f"fresh_index_{key}" not in control  # nothing trained the document tower: its index is current
        assert control[key] < 1.5 * before[key], (key, control)


def test_demo_reuses_a_saved_reading_warm_start_of_the_same_world_only(tmp_path):
    tiny = dict(
        max_steps=1, ict_steps=0, reading_steps=2, per_device_train_batch_size=4, num_people=4, num_cities=2, eval_steps=1,
        num_eval_facts=4, hidden_size=32, num_hidden_layers=2, disable_tqdm=True,
    )  # fmt: skip
    first = run_demo(DemoArguments(output_dir=str(tmp_path / "first"), **tiny))
    saved = tmp_path / "first" / "reading-warm-start"
    assert first["reading_history"] and (saved / "model.safetensors").is_file()
    again = run_demo(DemoArguments(output_dir=str(tmp_path / "again"), reader_from=str(saved), **tiny))
    assert again["reading_history"] == []
    assert again["random_init"] == first["random_init"]  # same world, same initial model
    with pytest.raises(ValueError, match="vocabulary"):
        run_demo(DemoArguments(output_dir=str(tmp_path / "other"), reader_from=str(saved), **{**tiny, "seed": 1}))


def test_cli_pretrain_pushes_the_trained_model_to_the_hub(tmp_path, hub_server, capsys):
    """`realm-hf pretrain --push_to_hub` publishes the trained model, its tokenizer, its index and a card in one
    commit, and a bad repository id is refused before training starts."""
    from huggingface_hub import HfApi

    from realm_hf import RealmForPreTraining, RealmRetriever

    args = ["pretrain", "--max_steps", "2", "--ict_steps", "0", "--reading_steps", "0", "--num_people", "4",
            "--num_cities", "2", "--per_device_train_batch_size", "4", "--eval_steps", "2", "--hidden_size", "32",
            "--num_eval_facts", "8", "--disable_tqdm", "True"]  # fmt: skip
    assert main([*args, "--output_dir", str(tmp_path / "bad"), "--push_to_hub", "--hub_model_id", "a/b/c"]) == 2
    assert "Repo id" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main([*args, "--output_dir", str(tmp_path / "run"), "--push_to_hub", "--hub_model_id", "tester/demo"]) == 0
    files = set(HfApi().list_repo_files("tester/demo"))
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json", "index/index_config.json"} <= files
    assert len(HfApi().list_repo_commits("tester/demo")) == 2  # the repository's creation and the one upload
    model = RealmForPreTraining.from_pretrained("tester/demo")
    retriever = RealmRetriever.from_pretrained("tester/demo")
    assert retriever.index.check_embedder(model.embedder)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["hub_commit"]


def test_demo_arguments_refuse_what_cannot_run():
    with pytest.raises(ValueError, match="num_candidates must be >= 2"):
        DemoArguments(num_candidates=1)
    with pytest.raises(ValueError, match="held_out_fraction"):
        DemoArguments(held_out_fraction=1.0)


@pytest.mark.parametrize(
    "command",
    [["--help"], ["pretrain", "--help"], ["pretrain", "--corpus", "docs.jsonl", "--help"], ["finetune", "--help"],
     ["ask", "--help"], ["index", "--help"], ["index-builder", "--help"], ["convert", "--help"]],
)  # fmt: skip
def test_every_command_prints_its_help(command, capsys):
    """`--help` works for every command (argparse %-formats the help texts: a bare '%' in one breaks it)."""
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_help_and_version_load_no_model_code_in_a_fresh_process():
    """`realm-hf --help`, `--version` and the help of the plain commands import neither torch nor transformers (the
    console script registers with the Auto classes only when it runs a command); the time it takes is in
    `benchmarks/bench_cli_help.py`."""
    code = (
        "import sys\n"
        "sys.argv = ['realm-hf', *sys.argv[1:]]  # what the console script's process has\n"
        "from realm_hf.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [name for name in ('torch', 'transformers', 'datasets', 'realm_hf.modeling_realm') if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    for args in ([], ["--help"], ["--version"], ["ask", "--help"], ["index", "--help"], ["index-builder", "--help"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stderr)
        assert "realm-hf" in done.stdout, args
    console_script = shutil.which("realm-hf")
    if console_script is not None:  # the installed entry point (an editable or wheel install)
        done = subprocess.run([console_script, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "index-builder" in done.stdout


def test_top_level_help_is_the_same_with_every_command_built():
    """The one-line help `realm-hf --help` shows without building the commands is the one each command declares."""
    from realm_hf.cli import build_parser

    assert build_parser([]).format_help() == build_parser().format_help()


def test_cli_conventions(tmp_path, capsys):
    """A bare `realm-hf` prints the help (it starts nothing), `--version`, both spellings of every option on every
    sub-command, and errors as one `realm-hf <command>: error: ...` line with exit code 2 (`--debug`: the
    traceback)."""
    from realm_hf import __version__
    from realm_hf.cli import build_parser

    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out and not (tmp_path / "realm-demo").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"realm-hf {__version__}"

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"pretrain", "finetune", "convert", "ask", "index", "index-builder"}
    for name, subparser in commands.items():
        options = set(subparser._option_string_actions)
        for option in (o for o in options if o.startswith("--") and ("-" in o[2:] or "_" in o[2:])):
            other = "--" + (option[2:].replace("-", "_") if "-" in option[2:] else option[2:].replace("_", "-"))
            assert other in options, (name, option)

    missing = str(tmp_path / "nowhere")
    assert main(["ask", missing, "a question?"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("realm-hf ask: error: ") and "nowhere" in err and "Traceback" not in err
    assert main(["index", missing, missing, str(tmp_path / "out"), "--batch_size", "4"]) == 2  # underscore spelling
    assert capsys.readouterr().err.startswith("realm-hf index: error: ")
    with pytest.raises(ValueError, match="nowhere"):
        main(["--debug", "ask", missing, "a question?"])


def test_cli_refuses_bad_arguments_before_any_work(tmp_path, capsys):
    """A negative step count or candidate count is refused with exit code 2 before anything is written (the demo used
    to find a negative --max_steps after minutes of warm starts)."""
    out = tmp_path / "never"
    assert main(["pretrain", "--max_steps", "-1", "--output_dir", str(out)]) == 2
    assert "max_steps" in capsys.readouterr().err and not out.exists()
    assert main(["pretrain", "--rerank_candidates", "-3", "--output_dir", str(out)]) == 2
    assert "rerank_candidates" in capsys.readouterr().err and not out.exists()
