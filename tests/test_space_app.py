"""The Space's Gradio app (`examples/space/app.py`). The page's logic (what it shows for a question) runs in the
default suite without gradio; in a real headless browser, a user types a question and the page shows the model's
answer, its score and the evidence passage with the answer highlighted: that test needs the `space-test` extra
(gradio, playwright) and Debian's `chromium`, `-m slow` (about a minute). Set `REALM_SPACE_SCREENSHOT=<file.png>` to
keep the page's screenshot (the README's comes from here).
"""

import html
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from realm_hf import RealmForOpenQA, answer_questions

from .utils import REFERENCE, load_example, openqa_retriever


def _space_app():
    """`examples/space/app.py` as a module (it imports gradio only when it builds the app)."""
    return load_example("space/app")


REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root in a closed network: no sandbox, no background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}: {process.stdout.read()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the app did not listen on port {port} within {timeout} s")


@pytest.fixture(scope="module")
def openqa_model(tmp_path_factory) -> tuple[Path, str]:
    """A tiny `realm-hf pretrain` + `realm-hf finetune` run, and one of its held-out questions."""
    from realm_hf.cli import main
    from realm_hf.demo.job import DemoArguments, run_demo
    from realm_hf.demo.openqa import load_world_questions

    root = tmp_path_factory.mktemp("space")
    run_demo(DemoArguments(
        output_dir=str(root / "demo"), max_steps=4, ict_steps=3, reading_steps=3, per_device_train_batch_size=8, num_people=8,
        num_cities=3, held_out_fraction=0.25, index_refresh_steps=2, eval_steps=4, num_eval_facts=8, hidden_size=32,
        num_hidden_layers=2, disable_tqdm=True,
    ))  # fmt: skip
    assert main(["finetune", "--pretrained_dir", str(root / "demo"), "--output_dir", str(root / "openqa"),
                 "--max_steps", "2", "--batch_size", "4", "--searcher_beam_size", "4", "--reader_beam_size", "2",
                 "--warmup_steps", "0", "--save_steps", "0", "--no_show_progress"]) == 0  # fmt: skip
    _, evaluation, _ = load_world_questions(root / "demo")
    return root / "openqa", evaluation["question"][0]


@pytest.mark.slow
def test_a_user_asks_the_space_and_reads_the_answer(openqa_model, tmp_path):
    pytest.importorskip("gradio")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from realm_hf import answer_questions
    from realm_hf.hub.publish import load_realm

    model_dir, question = openqa_model
    model, tokenizer, retriever = load_realm(model_dir)
    model.set_retriever(retriever)
    (expected,) = answer_questions(model.eval(), tokenizer, [question])
    assert expected.error is None and expected.answer

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    app = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "examples" / "space" / "app.py"), "--model", str(model_dir), "--port",
         str(port), "--example", question],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for(port, app)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#question textarea").fill(question)
            page.locator("#ask").click()
            answer_box = page.locator("#answer textarea")
            page.wait_for_function("() => document.querySelector('#answer textarea').value !== ''", timeout=60_000)
            page.wait_for_function("() => !document.querySelector('.pending')", timeout=30_000)
            shown_answer = answer_box.input_value()
            shown_score = page.locator("#score textarea").input_value()
            evidence_html = page.locator("#evidence").inner_html()
            page.screenshot(path=os.environ.get("REALM_SPACE_SCREENSHOT", str(tmp_path / "space.png")), full_page=True)
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=30)
    assert shown_answer == expected.answer
    assert float(shown_score) == pytest.approx(expected.score, abs=0.01)
    assert expected.title in evidence_html
    if expected.answer.lower() in expected.evidence.lower():
        assert "<mark>" in evidence_html


def test_highlight_marks_every_occurrence_and_escapes_html():
    highlight = _space_app().highlight
    assert highlight("Born in Paris; paris <b>", "paris") == (
        "Born in <mark>Paris</mark>; <mark>paris</mark> &lt;b&gt;"
    )
    assert highlight("a < b", "") == "a &lt; b"


def test_the_page_shows_the_models_answer_score_and_evidence(openqa_tokenizer, blocks):
    """The page's view of a question is the model's own answer (`answer_questions`), its score, and its evidence
    block with the answer marked; a question the model cannot answer shows the error instead."""
    view = _space_app().answer_view
    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    model = RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors", retriever=retriever).eval()
    question = "what is the capital of france?"
    (expected,) = answer_questions(model, openqa_tokenizer, [question])
    shown_answer, shown_score, evidence = view(model, openqa_tokenizer, question)
    assert expected.error is None and shown_answer == expected.answer
    assert shown_score == f"{expected.score:.2f}"
    assert evidence.startswith(f"<h4>{html.escape(expected.title)}</h4><p>") and evidence.endswith("</p>")
    if expected.answer and expected.answer.lower() in expected.evidence.lower():
        assert "<mark>" in evidence
    (empty,) = answer_questions(model, openqa_tokenizer, [""])
    assert empty.error is not None
    assert view(model, openqa_tokenizer, "") == ("", "", f"<p>{empty.error}</p>")
