"""A Gradio app for a Hugging Face Space: ask a REALM open-domain QA model a question, and see its answer, the
answer's score and the evidence passage it was read from, with the answer highlighted.

It serves a model saved by `save_realm` / `realm-hf finetune` or published with `publish_realm` (a local directory or
a Hub model id, with its tokenizer and index). Offline, on the embedded demo's output:

    pip install "realm-hf[space]"
    realm-hf pretrain && realm-hf finetune
    python examples/space/app.py --model realm-demo/openqa

On a Space, put this file and `requirements.txt` (next to it) in the Space repository, and name the model in the
Space's `REALM_MODEL` variable.
"""

from __future__ import annotations

import argparse
import html
import os
import re

from realm_hf import answer_questions
from realm_hf.hub.publish import load_realm


def highlight(evidence: str, answer: str) -> str:
    """The evidence as HTML, with every occurrence of the answer (case-insensitive) in `<mark>`."""
    if not answer:
        return html.escape(evidence)
    pieces = re.split(f"({re.escape(answer)})", evidence, flags=re.IGNORECASE)
    return "".join(f"<mark>{html.escape(p)}</mark>" if i % 2 else html.escape(p) for i, p in enumerate(pieces))


def answer_view(model, tokenizer, question: str) -> tuple[str, str, str]:
    """What the page shows for `question`: the answer, its score (2 decimals) and the evidence as HTML (its title,
    the passage with the answer highlighted), or the error message in place of the evidence."""
    (answer,) = answer_questions(model, tokenizer, [question])
    if answer.error is not None:
        return "", "", f"<p>{html.escape(answer.error)}</p>"
    evidence = f"<h4>{html.escape(answer.title)}</h4><p>{highlight(answer.evidence, answer.answer)}</p>"
    return answer.answer, f"{answer.score:.2f}", evidence


def build_app(model_name_or_path: str, revision: str | None = None, examples: list[str] | None = None):
    """The app (a `gradio.Blocks`): a question box, the answer, its score and the highlighted evidence passage."""
    import gradio as gr  # only the app needs it: the page's logic above is plain Python

    model, tokenizer, retriever = load_realm(model_name_or_path, revision=revision)
    if retriever is None or tokenizer is None:
        raise ValueError(f"{model_name_or_path} has no index or tokenizer to answer from (save it with save_realm).")
    model.set_retriever(retriever)
    model.eval()

    def ask(question: str) -> tuple[str, str, str]:
        return answer_view(model, tokenizer, question)

    with gr.Blocks(title="REALM open-domain QA") as app:
        gr.Markdown(
            f"# REALM open-domain QA\nAsk a question: `{model_name_or_path}` retrieves a passage from its knowledge "
            "corpus and reads the answer from it."
        )
        question = gr.Textbox(label="Question", elem_id="question", placeholder="where was ... born?")
        ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
        with gr.Row():
            answer = gr.Textbox(label="Answer", elem_id="answer", interactive=False)
            score = gr.Textbox(label="Score", elem_id="score", interactive=False)
        evidence = gr.HTML(label="Evidence", elem_id="evidence")
        if examples:
            gr.Examples(examples=examples, inputs=question)
        ask_button.click(ask, inputs=question, outputs=[answer, score, evidence])
        question.submit(ask, inputs=question, outputs=[answer, score, evidence])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=os.environ.get("REALM_MODEL", "realm-demo/openqa"),
        help="A directory or Hub model id saved with save_realm / publish_realm (default: $REALM_MODEL, else "
        "realm-demo/openqa, the output of `realm-hf finetune`).",
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of the model.")
    parser.add_argument("--example", action="append", default=None, help="An example question (repeatable).")
    parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (0.0.0.0 on a Space).")
    parser.add_argument("--port", type=int, default=7860, help="Port to serve on.")
    args = parser.parse_args()
    build_app(args.model, revision=args.revision, examples=args.example).launch(
        server_name=args.host, server_port=args.port
    )


if __name__ == "__main__":
    main()
