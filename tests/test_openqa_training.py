"""Open-QA fine-tuning: DataCollatorForRealmOpenQA, RealmTrainer and evaluate_open_qa on the reference fixture."""

import json
import math

import datasets
import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from realm_hf import RealmForOpenQA
from realm_hf.openqa_training import DataCollatorForRealmOpenQA, RealmTrainer, evaluate_open_qa

from .test_retrieval_realm import REFERENCE, openqa_retriever


QUESTIONS = json.loads((REFERENCE / "openqa" / "questions.json").read_text())

EXPECTED_KEYS = {
    "exact_match",
    "f1",
    "recall_at_1",
    "recall_at_k",
    "k",
    "num_questions",
    "num_empty_questions",
    "num_without_answers",
    "num_exact_match",
    "num_retrieved_at_1",
    "num_retrieved_at_k",
}


@pytest.fixture
def model(openqa_tokenizer, blocks):
    retriever = openqa_retriever(openqa_tokenizer, blocks, "safetensors")
    return RealmForOpenQA.from_pretrained(REFERENCE / "openqa" / "safetensors", retriever=retriever)


def test_collator_shapes_and_answer_ids(openqa_tokenizer):
    collator = DataCollatorForRealmOpenQA(openqa_tokenizer, max_question_length=8)
    examples = [
        QUESTIONS[2],
        {"question": "what is the capital of france?", "answers": ["", "  ", "paris"], "id": "x"},
        {"question": "who?", "answers": ["", "   "]},
        {"question": "", "answers": "berlin"},
    ]
    batch = collator(examples)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "answer_ids"}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].shape == (4, 8) and batch[key].dtype == torch.long
    assert batch["input_ids"][:, 0].eq(openqa_tokenizer.cls_token_id).all()
    assert batch["token_type_ids"].eq(0).all()
    assert batch["attention_mask"][3].tolist()[:3] == [1, 1, 0]  # "" -> [CLS] [SEP]
    answer = openqa_tokenizer
    assert batch["answer_ids"] == [
        answer(["the nile", "nile"], add_special_tokens=False).input_ids,
        answer(["paris"], add_special_tokens=False).input_ids,
        [],
        answer(["berlin"], add_special_tokens=False).input_ids,
    ]
    assert all(isinstance(a, list) and all(isinstance(t, int) for t in a) for q in batch["answer_ids"] for a in q)
    assert openqa_tokenizer.sep_token_id not in sum(batch["answer_ids"][0], [])


def test_trainer_updates_query_embedder_and_reader_but_not_the_index(model, openqa_tokenizer, tmp_path):
    torch.manual_seed(0)
    index_embeddings = np.array(model.retriever.index.embeddings, copy=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train = datasets.Dataset.from_list([{"question": q["question"], "answers": q["answers"]} for q in QUESTIONS])
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    trainer = RealmTrainer(
        model=model, args=args, train_dataset=train, data_collator=DataCollatorForRealmOpenQA(openqa_tokenizer)
    )
    result = trainer.train()
    assert result.global_step == 4
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert math.isfinite(result.training_loss)
    params = dict(model.named_parameters())

    def changed(prefix):
        return any(not torch.equal(params[n].detach(), before[n]) for n in params if n.startswith(prefix))

    assert changed("embedder.cls.dense.")  # the retrieval projection
    assert changed("embedder.realm.")
    assert changed("reader.")
    np.testing.assert_array_equal(model.retriever.index.embeddings, index_embeddings)


def test_trainer_handles_a_batch_without_reachable_answers(model, openqa_tokenizer):
    collator = DataCollatorForRealmOpenQA(openqa_tokenizer)
    batch = collator([{"question": "who?", "answers": []}, {"question": "what?", "answers": ["zebra"]}])
    trainer = RealmTrainer.__new__(RealmTrainer)  # compute_loss needs no Trainer state
    model.train()
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    assert loss.requires_grad and loss.item() == 0.0
    loss.backward()
    assert outputs.reader_output.loss.item() == 0.0
    # A zero loss with no graph at all is replaced by a zero attached to the trainable parameters.
    model.zero_grad()

    class DetachedLoss(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kwargs):
            out = self.inner(**kwargs)
            out.reader_output["loss"] = out.reader_output.loss.detach()
            return out

    loss = trainer.compute_loss(DetachedLoss(model), batch)
    assert loss.requires_grad and loss.item() == 0.0
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_evaluate_open_qa(model, openqa_tokenizer):
    data = [*QUESTIONS, {"question": "", "answers": ["paris"]}, {"question": "what is a zebra?", "answers": ["okapi"]}]
    model.train()
    result = evaluate_open_qa(model, openqa_tokenizer, data, batch_size=2, return_predictions=True)
    assert model.training  # mode restored
    assert EXPECTED_KEYS <= set(result)
    for key in ("exact_match", "f1"):
        assert 0.0 <= result[key] <= 100.0
    for key in ("recall_at_1", "recall_at_k"):
        assert 0.0 <= result[key] <= 1.0
    assert result["recall_at_1"] <= result["recall_at_k"]
    assert result["k"] == model.config.reader_beam_size
    assert result["num_questions"] == len(data)
    assert result["num_empty_questions"] == 1
    assert result["num_without_answers"] == 0
    assert result["recall_at_k"] == result["num_retrieved_at_k"] / len(data)
    assert result["exact_match"] == pytest.approx(100.0 * result["num_exact_match"] / len(data))
    empty, zebra = result["predictions"][-2:]
    assert empty["error"] == "empty question" and not empty["exact_match"] and not empty["retrieved_at_k"]
    assert not zebra["exact_match"] and not zebra["retrieved_at_k"]
    # "paris" is in block 1 and the capital-of-france question retrieves it among its top blocks.
    assert result["predictions"][1]["retrieved_at_k"]

    # The same numbers from a datasets.Dataset, with a larger k.
    dataset = datasets.Dataset.from_list(data)
    again = evaluate_open_qa(model, openqa_tokenizer, dataset, batch_size=16, k=100)
    assert again["k"] == len(model.retriever.index)
    assert again["exact_match"] == result["exact_match"]
    assert again["recall_at_1"] == result["recall_at_1"]
    assert again["num_retrieved_at_k"] == len(QUESTIONS)  # every answer is somewhere in the corpus


def test_evaluate_open_qa_empty_dataset(model, openqa_tokenizer):
    result = evaluate_open_qa(model, openqa_tokenizer, [])
    assert result["num_questions"] == 0
    assert result["exact_match"] == result["recall_at_k"] == 0.0
