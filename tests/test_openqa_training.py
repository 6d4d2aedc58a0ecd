"""Open-QA fine-tuning: DataCollatorForRealmOpenQA, RealmTrainer and evaluate_open_qa on the reference fixture."""

import json
import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from realm_hf import RealmForOpenQA, RealmIndex
from realm_hf.evaluation.open_qa import evaluate_open_qa, gold_passage_recall
from realm_hf.evaluation.qa_data import gold_doc_ids
from realm_hf.hub.model_card import RealmModelCardCallback
from realm_hf.inference import answer_questions
from realm_hf.training.checkpointing import UnsafeCheckpointError
from realm_hf.training.openqa import DataCollatorForRealmOpenQA, RealmTrainer

from .utils import PICKLE_ENDINGS, REFERENCE, RunsCode, openqa_retriever


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


def test_trainer_with_default_arguments_sets_its_columns_and_writes_its_card(model, openqa_tokenizer, tmp_path):
    """Plain `TrainingArguments` (remove_unused_columns left at True) train: RealmTrainer keeps the collator's
    columns itself; its model card callback is attached, and the saved model carries the filled card."""
    train = datasets.Dataset.from_list([{"question": q["question"], "answers": q["answers"]} for q in QUESTIONS])
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_steps=1, learning_rate=1e-4)  # fmt: skip
    assert args.remove_unused_columns
    trainer = RealmTrainer(
        model=model, args=args, train_dataset=train, data_collator=DataCollatorForRealmOpenQA(openqa_tokenizer)
    )
    assert trainer.train().global_step == 2 and not trainer.args.remove_unused_columns
    assert sum(isinstance(c, RealmModelCardCallback) for c in trainer.callback_handler.callbacks) == 1
    trainer.save_model(str(tmp_path / "saved"))
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "- `learning_rate`: 0.0001" in card and "RealmForOpenQA" in card


def test_trainer_checkpoints_hold_no_pickle_and_resume_refuses_one(model, openqa_tokenizer, tmp_path):
    """RealmTrainer's checkpoints are safetensors and JSON (optimizer, schedule, random state, training arguments);
    resuming from one that holds a pickle file is refused before anything is read, and the pickle's code never runs."""
    train = datasets.Dataset.from_list([{"question": q["question"], "answers": q["answers"]} for q in QUESTIONS])

    def trainer(max_steps):
        args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=max_steps, per_device_train_batch_size=2,
                                 report_to=[], use_cpu=True, save_steps=2, logging_steps=1, learning_rate=1e-4)  # fmt: skip
        collator = DataCollatorForRealmOpenQA(openqa_tokenizer)
        return RealmTrainer(model=model, args=args, train_dataset=train, data_collator=collator)

    trainer(2).train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    files = {p.name for p in checkpoint.iterdir()}
    assert {
        "optimizer.json",
        "optimizer.safetensors",
        "scheduler.json",
        "rng_state_0.json",
        "training_args.json",
    } <= files
    assert not [name for name in files if Path(name).suffix in PICKLE_ENDINGS], files
    marker = tmp_path / "code-ran"
    (checkpoint / "custom.pkl").write_bytes(pickle.dumps(RunsCode(str(marker))))
    with pytest.raises(UnsafeCheckpointError, match="custom.pkl"):
        trainer(3).train(resume_from_checkpoint=True)
    assert not marker.exists()
    (checkpoint / "custom.pkl").unlink()
    assert trainer(3).train(resume_from_checkpoint=True).global_step == 3


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


def test_evaluate_open_qa_reads_recall_from_the_answers_retrieval(model, openqa_tokenizer, monkeypatch):
    """Recall within the reader's beam comes from the blocks the model retrieved to answer: one search per batch, the
    same figures as searching again (which k beyond the beam still does)."""
    index = model.retriever.index
    searches = []
    original = type(index).search

    def counting_search(self, *args, **kwargs):
        searches.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(index), "search", counting_search)
    k = model.config.reader_beam_size
    result = evaluate_open_qa(model, openqa_tokenizer, QUESTIONS, batch_size=2, return_predictions=True)
    assert len(searches) == -(-len(QUESTIONS) // 2)  # the model's own searches only
    answers = answer_questions(model, openqa_tokenizer, [q["question"] for q in QUESTIONS])
    assert all(len(a.retrieved_block_ids) == k for a in answers)
    assert [a.block_id in a.retrieved_block_ids for a in answers] == [True] * len(answers)
    searches.clear()
    wider = evaluate_open_qa(model, openqa_tokenizer, QUESTIONS, batch_size=2, k=k + 1)
    assert len(searches) > -(-len(QUESTIONS) // 2)  # k beyond the beam: searched again
    assert wider["recall_at_1"] == result["recall_at_1"]


def test_evaluate_open_qa_empty_dataset(model, openqa_tokenizer):
    result = evaluate_open_qa(model, openqa_tokenizer, [])
    assert result["num_questions"] == 0
    assert result["exact_match"] == result["recall_at_k"] == 0.0


class _LookupEmbedder(torch.nn.Module):
    """A query embedder whose embedding is a fixed vector per first question token."""

    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Embedding.from_pretrained(vectors)

    def forward(self, input_ids, return_dict=True, **kwargs):
        return SimpleNamespace(projected_score=self.table(input_ids[:, 1]))


def test_gold_passage_recall_counts_blocks_of_the_gold_document(tiny_tokenizer):
    # Blocks 0..3 of documents 0, 0, 1, 2; block i has embedding e_i.
    corpus = datasets.Dataset.from_dict(
        {"title": ["a"] * 4, "text": ["b"] * 4, "doc_id": [0, 0, 1, 2], "token_ids": [[5, 6]] * 4}
    )
    index = RealmIndex.build(corpus, np.eye(4, dtype=np.float32), show_progress=False)
    vocab = tiny_tokenizer.get_vocab()
    vectors = torch.zeros(len(vocab), 4)
    vectors[vocab["paris"]] = torch.tensor([1.0, 0.5, 0.0, 0.0])  # block 0 (doc 0), then block 1 (doc 0)
    vectors[vocab["berlin"]] = torch.tensor([0.0, 0.0, 1.0, 0.5])  # block 2 (doc 1), then block 3 (doc 2)
    vectors[vocab["rome"]] = torch.tensor([0.2, 0.0, 0.0, 1.0])  # block 3 (doc 2), then block 0 (doc 0)
    embedder = _LookupEmbedder(vectors).train()
    recall = gold_passage_recall(
        embedder, index, tiny_tokenizer, ["paris", "berlin", "rome"], [0, 2, 0], ks=(1, 2, 9), batch_size=2
    )
    # paris: doc 0 at rank 1; berlin: doc 2 at rank 2; rome: doc 0 at rank 2.
    assert recall == {"gold_recall_at_1": 1 / 3, "gold_recall_at_2": 1.0, "gold_recall_at_9": 1.0}
    assert embedder.training  # mode restored
    # Several gold documents per question: any of them counts (berlin: doc 1 at rank 1).
    several = gold_passage_recall(
        embedder, index, tiny_tokenizer, ["paris", "berlin", "rome"], [[1, 2], [1, 2], [0]], ks=(1, 2)
    )
    assert several == {"gold_recall_at_1": 1 / 3, "gold_recall_at_2": 2 / 3}
    with pytest.raises(ValueError, match="at least one gold doc id"):
        gold_passage_recall(embedder, index, tiny_tokenizer, ["paris"], [[]])
    with pytest.raises(ValueError, match="2 questions but 1 gold"):
        gold_passage_recall(embedder, index, tiny_tokenizer, ["paris", "rome"], [0])


def test_gold_doc_ids_are_passage_rows():
    passages = datasets.Dataset.from_dict({"passage_id": ["p0", "p1", "p2"]})
    questions = datasets.Dataset.from_dict({"gold_passage_id": ["p2", "p0", "p2"]})
    assert gold_doc_ids(questions, passages) == [2, 0, 2]
    with pytest.raises(ValueError, match="1 gold passages are not among the passages"):
        gold_doc_ids(datasets.Dataset.from_dict({"gold_passage_id": ["p9"]}), passages)


def test_gold_document_supervision_trains_the_retriever_toward_the_gold_blocks(model, openqa_tokenizer):
    # "nile" is in block 3 (the gold document) and in block 6: the answer string marks both, the gold documents one.
    example = {"question": QUESTIONS[2]["question"], "answers": QUESTIONS[2]["answers"], "gold_doc_ids": [3]}
    model.config.searcher_beam_size = len(model.retriever.index)  # every block is retrieved
    model.train()
    torch.manual_seed(0)
    by_answer = model(**DataCollatorForRealmOpenQA(openqa_tokenizer)([example]), return_dict=True)
    torch.manual_seed(0)
    batch = DataCollatorForRealmOpenQA(openqa_tokenizer, gold_documents=True)([example])
    assert batch["gold_doc_ids"] == [[3]]
    by_gold = model(**batch, return_dict=True)

    block_ids = by_gold.retrieved_block_ids[0].tolist()
    assert by_answer.reader_output.retriever_correct.nonzero().flatten().tolist() == sorted(
        block_ids.index(b) for b in (3, 6)
    )
    assert by_gold.reader_output.retriever_correct.nonzero().flatten().tolist() == [block_ids.index(3)]
    log_probs = by_gold.retrieved_logits[0].log_softmax(-1)
    torch.testing.assert_close(by_gold.reader_output.retriever_loss, -log_probs[block_ids.index(3)])
    torch.testing.assert_close(by_gold.reader_output.reader_loss, by_answer.reader_output.reader_loss)


def test_gold_document_supervision_refuses_what_it_cannot_use(model, openqa_tokenizer):
    collator = DataCollatorForRealmOpenQA(openqa_tokenizer, gold_documents=True)
    for gold in (None, [], "3", [3.0]):
        with pytest.raises(ValueError, match="example 0 needs `gold_doc_ids`"):
            collator([{"question": "q?", "answers": ["a"], "gold_doc_ids": gold}])
    assert collator([{"question": "q?", "answers": ["a"], "gold_doc_ids": 3}])["gold_doc_ids"] == [[3]]
    batch = DataCollatorForRealmOpenQA(openqa_tokenizer)([{"question": "q?", "answers": ["a"]}])
    with pytest.raises(ValueError, match="needs `answer_ids` too"):
        model(input_ids=batch["input_ids"], gold_doc_ids=[[3]])
    with pytest.raises(ValueError, match="has 2 entries but the batch has 1"):
        model(**batch, gold_doc_ids=[[3], [4]])
    with pytest.raises(ValueError, match="at least one gold doc id"):
        model(**batch, gold_doc_ids=[[]])
