"""The embedded demo (`realm-hf pretrain`) at a tiny size: it runs end to end and reports what it measured."""

import json

from realm_hf.cli import main
from realm_hf.demo import DemoArguments, run_demo


def test_demo_runs_end_to_end_and_reports(tmp_path):
    args = DemoArguments(
        output_dir=str(tmp_path / "demo"), max_steps=6, ict_steps=4, batch_size=8, num_people=8, num_cities=3,
        index_refresh_steps=3, eval_steps=3, num_eval_facts=16, hidden_size=32, show_progress=False,
    )  # fmt: skip
    report = run_demo(args)
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["steps"] == 6 and saved["documents"] == 2 * 8 + 3
    assert 0 <= saved["after"]["retrieval_accuracy"] <= 1 and 0 <= saved["before"]["retrieval_accuracy"] <= 1
    assert [r["step"] for r in report["history"] if "retrieval_accuracy" in r] == [3, 6]
    assert any("index_refresh_seconds" in r for r in report["history"])
    assert report["ict_history"] and (tmp_path / "demo" / "report.png").stat().st_size > 1000


def test_cli_pretrain_arguments(tmp_path, capsys):
    code = main(["pretrain", "--output_dir", str(tmp_path / "cli"), "--max_steps", "2", "--ict_steps", "0",
                 "--num_people", "4", "--num_cities", "2", "--batch_size", "4", "--eval_steps", "2",
                 "--hidden_size", "32", "--num_eval_facts", "8", "--no_show_progress"])  # fmt: skip
    assert code == 0
    assert '"steps": 2' in capsys.readouterr().out


def test_demo_pipeline_learns_to_retrieve_the_evidence_document(tmp_path):
    """A smaller version of the demo: top-1 retrieval of the document holding the masked fact rises from chance."""
    args = DemoArguments(
        output_dir=str(tmp_path / "demo"), num_people=150, num_cities=30, ict_steps=40, max_steps=6, eval_steps=6,
        num_eval_facts=96, index_refresh_steps=3, show_progress=False,
    )  # fmt: skip
    report = run_demo(args)
    chance = report["chance_retrieval_accuracy"]
    assert chance < 0.01
    assert report["random_init"]["retrieval_accuracy"] <= 0.1
    assert report["before"]["retrieval_accuracy"] >= max(0.5, 50 * chance)
    assert report["after"]["retrieval_accuracy"] >= max(0.5, 50 * chance)
