"""A transformers `pipeline` for REALM open-domain QA: `pipeline("realm-open-qa", model=..., tokenizer=...)`.

Importing `realm_hf` registers the task (`register_realm_pipeline`). For each question the pipeline returns the
answer span, its score (reader logit plus the block's retrieval logit) and the evidence block with its title, like
[`~realm_hf.answer_questions`]; `batch_size=` batches questions through one forward pass of [`RealmForOpenQA`].

The knowledge index is data, not weights, so the model needs its retriever: `model=` a local directory or Hub
repository that holds one (`save_pretrained` / `push_to_hub` of a model with a retriever, or
[`~realm_hf.save_realm`]: its `index/` is loaded with the model), a model that has one, or
`retriever=RealmRetriever(...)`.

Example:

```python
>>> from transformers import pipeline
>>> import realm_hf  # registers "realm-open-qa"
>>> qa = pipeline("realm-open-qa", model="path/to/saved-realm")  # doctest: +SKIP
>>> qa(["what is the capital of france?", "who wrote hamlet?"], batch_size=2)  # doctest: +SKIP
[{'answer': 'paris', 'score': 7.1, 'block_id': 1, 'title': '...', 'evidence': 'paris is the capital of france.'}, ...]
```
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .inference import block_texts, split_open_qa_output
from .logging import get_logger
from .modeling_realm import RealmForOpenQA
from .retrieval.retriever import load_retriever_for


logger = get_logger(__name__)

TASK = "realm-open-qa"


class RealmOpenQAPipeline(Pipeline):
    r"""
    Open-domain question answering with [`RealmForOpenQA`]: retrieve evidence blocks from the knowledge index, read
    them and extract an answer span.

    Args:
        model ([`RealmForOpenQA`]): The model; it must have a retriever, or one must be given or found next to it.
        tokenizer: The question tokenizer.
        retriever ([`RealmRetriever`], *optional*): Set on the model when given.
        max_question_length (`int`, *optional*, defaults to 64): Questions are truncated to this many tokens.

    Call it on a question (`str`) or a list of questions; each result is a `dict` with `answer` (`str`), `score`
    (`float`), `block_id` (`int`), `title` (`str`) and `evidence` (`str`). An empty question raises a `ValueError`
    (use [`~realm_hf.answer_questions`] to get per-question errors instead).
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, retriever=None, max_question_length: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.model, RealmForOpenQA):
            raise ValueError(f"The {TASK} pipeline needs a RealmForOpenQA, got {type(self.model).__name__}.")
        if retriever is not None:
            self.model.set_retriever(retriever)
        if self.model.retriever is None:
            self.model.set_retriever(_retriever_next_to(self.model, self.tokenizer))
        self.max_question_length = max_question_length

    def _sanitize_parameters(self, max_question_length: int | None = None, **kwargs):
        preprocess_params = {}
        if max_question_length is not None:
            preprocess_params["max_question_length"] = max_question_length
        return preprocess_params, {}, {}

    def preprocess(self, question: str, max_question_length: int | None = None) -> dict[str, torch.Tensor]:
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"The {TASK} pipeline got an empty question ({question!r}).")
        return self.tokenizer(
            question,
            truncation=True,
            max_length=max_question_length or self.max_question_length,
            return_token_type_ids=True,
            return_tensors="pt",
        )

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        output = self.model(
            input_ids=model_inputs["input_ids"],
            attention_mask=model_inputs.get("attention_mask"),
            token_type_ids=model_inputs.get("token_type_ids"),
            return_dict=True,
        )
        # One entry per question, batch dimension first, so that the pipeline can split a batch into items.
        return split_open_qa_output(output, model_inputs["input_ids"].size(0))

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        answer_ids = model_outputs["answer_ids"]
        answer_ids = answer_ids[0] if isinstance(answer_ids, list) else answer_ids
        block_id = int(model_outputs["block_id"].reshape(-1)[0])
        ((title, evidence),) = block_texts(self.model.retriever.index.corpus, [block_id])
        return {
            "answer": self.tokenizer.decode(answer_ids.reshape(-1), skip_special_tokens=True),
            "score": float(model_outputs["score"].reshape(-1)[0]),
            "block_id": block_id,
            "title": title,
            "evidence": evidence,
        }


def _retriever_next_to(model: RealmForOpenQA, tokenizer):
    """The [`RealmRetriever`] saved with a model that was loaded without one (its local directory or Hub repository:
    `index/`; a legacy `block_records.npy` stays refused: the pipeline never unpickles)."""

    if tokenizer is None:
        raise ValueError(f"The {TASK} pipeline needs the question tokenizer.")
    source = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", "")
    retriever = load_retriever_for(model, source, tokenizer=tokenizer) if source else None
    if retriever is None:
        raise ValueError(
            f"The {TASK} pipeline needs a knowledge index: {source or 'the model'} has none. Pass a model with a "
            "retriever (from_pretrained of a directory or Hub repository holding `index/`, or realm_hf.load_realm), "
            "or retriever=RealmRetriever(index, tokenizer)."
        )
    return retriever


def register_realm_pipeline() -> None:
    """Registers the `"realm-open-qa"` task with `transformers.pipeline` (idempotent)."""
    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is RealmOpenQAPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=RealmOpenQAPipeline, pt_model=RealmForOpenQA, type="text")


__all__ = ["RealmOpenQAPipeline", "register_realm_pipeline"]
