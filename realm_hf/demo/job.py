"""The embedded default job: REALM pre-training on the synthetic knowledge corpus, from random initialisation.

Everything is generated in code (corpus, vocabulary, model), so the job needs no download. The pipeline is the
paper's, in miniature:

1. **Reading warm start** (the analogue of starting the encoder from BERT): the knowledge-augmented encoder learns to
   read a document for a masked fact on *other* synthetic worlds (other people, set in the target world's cities),
   each epoch a new world with new facts, and with the evidence document given. It learns to read, and the place names
   it will read, not the target facts: a world that stays the same is memorised instead, an encoder of 2 layers does
   not learn to read at all, and one that never saw the target world's city names barely copies them (their
   embeddings were never trained; measured in the README's pre-training section).
2. **ICT warm start** of the retriever on the target corpus, kept weak (`ict_steps`).
3. **REALM pre-training**: the marginal masked-LM loss through retrieval trains both embedders (at
   `retriever_learning_rate`) and the encoder; neither tower is ever shown the evidence document of a target fact
   outside REALM's own retrieval.

The run writes its settings (`demo_args.json`), the model after the warm starts with its index (`warm-start/`) and the
trained model (`final/`), from which `realm-hf finetune` (`realm_hf.demo.openqa`) fine-tunes open-domain QA.

It reports, over the steps, the masked-LM loss and, on masked facts whose own document is excluded from retrieval:

- retrieval accuracy: how often the top retrieved document (the null document aside) is the other document that
  states the masked fact (chance is 1 / (number of documents - 1));
- masked-LM accuracy on the salient span: how often the marginal prediction of the masked fact is right;
- reading accuracy: the same with the evidence document as the only candidate (how well the encoder reads);
- the evidence document's prior `p(z|x)` and posterior `p(z|x, y)` when it is among the candidates (their difference
  is the gradient that moves the retriever toward it).

Facts are evaluated on training sentences and on **held-out** sentences: every sentence of `held_out_fraction` of the
people is kept out of the pre-training stream (their documents stay in the corpus), so masked-LM accuracy there can
only come from reading the retrieved document.

Two things decide whether the masked-LM signal raises retrieval: an encoder that already reads the target world's
documents (the retriever's gradient on a candidate is `prior - posterior`, and the evidence document's posterior exceeds
its prior only when the encoder can read it; with a weak reader that signal is noise, which Adam turns into full-size
steps, and retrieval collapses), and a fresh index (`index_refresh_steps=1`: at the retriever's learning rate the
towers move fast, and a stale index rarely has the evidence document among the candidates). `reading_accuracy` in the
report (masked-LM accuracy with the evidence document as the only candidate) tells the two apart. The measurements are
in the README's pre-training section and `benchmarks/ablate_pretraining.py`.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import datasets
import numpy as np
import torch
from huggingface_hub.utils import get_token, validate_repo_id

from ..configuration_realm import RealmConfig
from ..evaluation.reading import first_blocks, read_with_documents, rows_of_documents
from ..file_utils import atomic_write_text
from ..hub.model_card import RealmModelCardData
from ..hub.publish import publish_realm, save_realm
from ..logging import get_logger
from ..modeling_realm import RealmForPreTraining, RealmKnowledgeAugEncoder
from ..retrieval.corpus import tokenize_blocks
from ..retrieval.fingerprint import compute_embedder_fingerprint
from ..retrieval.index import RealmIndex, build_index
from ..retrieval.retriever import RealmRetriever
from ..tokenization_realm import RealmTokenizerFast
from ..training.collators import (
    MASKING_MODES,
    DataCollatorForInverseClozeTask,
    DataCollatorForRealmPreTraining,
    prepare_ict_examples,
)
from ..training.ict import InverseClozeTaskArguments, train_inverse_cloze_task
from ..training.masking import tag_salient_spans
from ..training.mlm_head import MaskedLMHeadFitting, fit_masked_lm_head
from ..training.pretraining import RealmPreTrainingArguments, train_realm
from .synthetic import SyntheticKnowledge, make_synthetic_knowledge


logger = get_logger(__name__)


READER_DIR = "reading-warm-start"
# The model after both warm starts (REALM pre-training's starting point, the ORQA-style baseline), with its index.
WARM_START_DIR = "warm-start"
# The run's `DemoArguments`, from which `realm-hf finetune` regenerates the same world and held-out split.
ARGS_FILE = "demo_args.json"


def option(default, help: str, choices: tuple | None = None):
    """A dataclass field with the `--help` text (and the choices) `HfArgumentParser` shows."""
    return field(default=default, metadata={"help": help, **({"choices": list(choices)} if choices else {})})


def check_hub_target(repo_id: str) -> None:
    """Refuses a bad `--push_to_hub` target before minutes of training, not after."""
    validate_repo_id(repo_id)
    if get_token() is None:
        raise ValueError("--push_to_hub needs a Hugging Face token (`hf auth login`, or HF_TOKEN).")


@dataclass
class DemoArguments(RealmPreTrainingArguments):
    r"""
    Arguments of the `realm-hf pretrain` demo: every [`RealmPreTrainingArguments`] option (so every
    `TrainingArguments` one: `--gradient_accumulation_steps`, `--bf16`, `--optim`, `--report_to`, ...) for its REALM
    stage, with the demo recipe's defaults where they differ (each named in the field's help), and the options of
    the generated world, the warm starts and the model size.
    """

    output_dir: str | None = option(
        "realm-demo",
        "Where the tokenizer, checkpoints, indexes, report, the model after the warm starts (warm-start/) and the "
        "trained model (final/, and submodels/) go (demo default: realm-demo).",
    )
    max_steps: int = option(300, "REALM pre-training steps (demo default: 300).")
    per_device_train_batch_size: int = option(
        32, "Masked sentences per step, also the batch of the warm starts (demo default: 32)."
    )
    learning_rate: float = option(
        3e-4,
        "Peak learning rate of the knowledge-augmented encoder during REALM pre-training (demo default: 3e-4, lower "
        "than the reading warm start's, so that the encoder keeps reading while the retriever still rarely finds the "
        "evidence).",
    )
    retriever_learning_rate: float | None = option(
        1e-4, "Peak learning rate of the query and document embedders (demo default: 1e-4; None: the encoder's)."
    )
    warmup_steps: float = option(0.1, "Linear warm-up: steps, or a fraction of max_steps below 1 (demo default: 0.1).")
    index_refresh_steps: int = option(
        1,
        "Re-embed the corpus and swap the index every N steps (demo default: 1, the world's 650 documents re-embed "
        "in a fraction of a step; 0: never, the index stays stale).",
    )
    eval_steps: float | None = option(50, "Evaluate the masked facts every N steps (demo default: 50).")
    embed_batch_size: int = option(256, "Blocks per forward pass when re-embedding (demo default: 256).")
    seed: int = option(0, "Random seed: worlds, model, data order, masking (demo default: 0).")
    reading_steps: int = option(
        500, "Reading warm start of the encoder on other generated worlds, evidence given (0: none)."
    )
    reading_learning_rate: float = option(1e-3, "Peak learning rate of the reading warm start.")
    reading_in_target_places: bool = option(
        True,
        "Set the reading worlds in the target world's cities and countries (other people, other facts), so that the "
        "encoder knows the place names it will read, as BERT knows real ones; --no_reading_in_target_places invents "
        "other places too (the encoder then cannot copy a target city's name: its embedding was never trained).",
    )
    ict_learning_rate: float = option(1e-3, "Learning rate of the ICT warm start.")
    num_people: int = option(300, "Invented people of the target world (two documents each).")
    num_cities: int = option(50, "Invented cities of the target world (one document each).")
    held_out_fraction: float = option(0.1, "Fraction of people whose sentences are kept out of pre-training.")
    ict_steps: int = option(
        30, "ICT warm-start steps of the retriever (kept weak: 16.4 percent top-1 with the default seed; 0: none)."
    )
    masking: str = option(
        "salient_span", "What is masked: salient spans (the paper's), random tokens or random spans.", MASKING_MODES
    )
    use_null_document: bool = option(True, "Put the null (empty) document first among the candidates.")
    hidden_size: int = option(128, "Hidden size of the three towers.")
    num_hidden_layers: int = option(4, "Transformer layers of each tower (reading needs more than 2).")
    num_candidates: int = option(8, "Documents retrieved per masked sentence (the null document included).")
    num_eval_facts: int = option(256, "Masked training-sentence facts evaluated (held-out ones: all of them).")
    reader_from: str | None = option(
        None,
        f"Start the encoder from the reading warm start that a run with the same world and model settings saved in "
        f"its {READER_DIR}/ (the reading warm start is then skipped).",
    )

    def __post_init__(self):
        if not 0 <= self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction}.")
        if self.reading_steps < 0 or self.ict_steps < 0:
            raise ValueError("reading_steps and ict_steps must be >= 0.")
        if self.num_candidates < 2:
            raise ValueError(
                f"num_candidates must be >= 2 (the null document and one retrieved), got {self.num_candidates}."
            )
        super().__post_init__()
        if self.push_to_hub:
            check_hub_target(self.repo_id)

    @classmethod
    def from_run(cls, path: str | os.PathLike) -> DemoArguments:
        """The arguments a run saved as `demo_args.json` (`to_json_string`), with `push_to_hub` off (the run's Hub
        target is not the caller's)."""
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        names = {f.name for f in fields(cls) if f.init}
        # Hub tokens are saved masked; options that later versions dropped are ignored.
        kept = {k: v for k, v in saved.items() if k in names and not k.endswith("_token")}
        return cls(**{**kept, "push_to_hub": False})

    @property
    def repo_id(self) -> str:
        """The Hub repository of `push_to_hub`."""
        return self.hub_model_id or Path(self.output_dir).resolve().name


def build_tokenizer(vocabulary: list[str], directory: Path) -> RealmTokenizerFast:
    """A WordPiece tokenizer of `vocabulary`, saved in `directory` (loadable with `AutoTokenizer`)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    tokenizer = RealmTokenizerFast.from_pretrained(str(directory))
    tokenizer.save_pretrained(directory)
    return tokenizer


def demo_config(tokenizer, args: DemoArguments) -> RealmConfig:
    hidden = args.hidden_size
    return RealmConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=max(1, hidden // 32),
        intermediate_size=hidden * 2,
        retriever_proj_size=64,
        max_position_embeddings=256,
        num_candidates=args.num_candidates,
        block_seq_len=128,
        use_null_document=args.use_null_document,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def masked_facts(tokenizer, facts) -> dict[str, torch.Tensor]:
    """Masks the answer of every fact sentence (its salient span) and keeps its evidence document."""
    batch = tokenizer(list(facts["sentence"]), padding=True, return_tensors="pt")
    labels = torch.full_like(batch.input_ids, -100)
    for i, answer in enumerate(list(facts["answer"])):
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        row = batch.input_ids[i].tolist()
        start = next(p for p in range(len(row)) if row[p : p + len(answer_ids)] == answer_ids)
        labels[i, start : start + len(answer_ids)] = batch.input_ids[i, start : start + len(answer_ids)]
        batch.input_ids[i, start : start + len(answer_ids)] = tokenizer.mask_token_id
    return {
        **batch,
        "labels": labels,
        "doc_ids": torch.tensor(list(facts["doc_id"])),
        "evidence_doc_ids": torch.tensor(list(facts["evidence_doc_id"])),
    }


def _fact_metrics(model, data: dict[str, torch.Tensor], block_doc_ids: np.ndarray, batch_size: int) -> dict:
    count = data["labels"].size(0)
    row_of_doc = first_blocks(block_doc_ids)  # one block per document in the demo's world
    correct_top1 = correct_tokens = total_tokens = reading_tokens = 0
    in_candidates = evidence_prior = evidence_posterior = 0.0
    for start in range(0, count, batch_size):
        part = {k: v[start : start + batch_size] for k, v in data.items()}
        evidence = part.pop("evidence_doc_ids")
        out = model(**part)
        ids = out.retrieved_block_ids.numpy()  # -1: the null document
        is_evidence = torch.from_numpy(np.where(ids >= 0, block_doc_ids[np.maximum(ids, 0)], -1)) == evidence[:, None]
        first_real = int(model.config.use_null_document)
        correct_top1 += int(is_evidence[:, first_real].sum())
        correct_tokens += int(out.masked_lm_correct.sum())
        total_tokens += out.masked_lm_correct.numel()
        in_candidates += float(is_evidence.any(-1).sum())
        evidence_prior += float((out.relevance_score.softmax(-1) * is_evidence).sum())
        evidence_posterior += float((out.retrieval_posterior * is_evidence).sum())
        read = read_with_documents(model, model.retriever, part, rows_of_documents(row_of_doc, evidence.tolist()))
        reading_tokens += int(read.masked_lm_correct.sum())
    found = max(in_candidates, 1.0)
    return {
        "retrieval_accuracy": correct_top1 / count,
        "eval_masked_lm_accuracy": correct_tokens / total_tokens,
        "reading_accuracy": reading_tokens / total_tokens,
        "evidence_in_candidates": in_candidates / count,
        "evidence_prior": evidence_prior / found,
        "evidence_posterior": evidence_posterior / found,
    }


def make_fact_evaluator(
    tokenizer, facts, block_doc_ids: np.ndarray, held_out_facts=None, batch_size: int = 64, corpus=None
):
    """`eval_fn(model, retriever, step)` for [`train_realm`]: retrieval and masked-LM accuracy on masked facts.

    Besides the two accuracies it reports how often the evidence document is among the candidates and its mean prior
    and posterior there. With `held_out_facts` (facts whose sentences were kept out of pre-training), the same figures
    on them come with a `held_out_` prefix (`held_out_masked_lm_accuracy`, `held_out_retrieval_accuracy`, ...).

    The figures are those of retrieval as training sees it: the index in service (possibly stale) searched as the
    model's retriever searches it. With `corpus` (the index's blocks), whenever the index in service was not embedded
    by the model's current document tower, the same figures are measured again against the corpus re-embedded by it
    and searched by the live query tower, with a `fresh_index_` prefix: what the towers have learned.
    """
    data = masked_facts(tokenizer, facts)
    held_out = masked_facts(tokenizer, held_out_facts) if held_out_facts is not None and len(held_out_facts) else None

    def measure(model) -> dict:
        metrics = _fact_metrics(model, data, block_doc_ids, batch_size)
        if held_out is not None:
            for key, value in _fact_metrics(model, held_out, block_doc_ids, batch_size).items():
                metrics["held_out_" + key.removeprefix("eval_")] = value
        return metrics

    def evaluate(model, retriever, step) -> dict:
        metrics = measure(model)
        index = retriever.index
        if corpus is not None and index.config.embedder_fingerprint != compute_embedder_fingerprint(model.embedder):
            in_service = model.retriever
            model.set_retriever(RealmRetriever(build_index(corpus, model.embedder, tokenizer, show_progress=False),
                                               tokenizer))  # fmt: skip
            try:
                metrics.update({f"fresh_index_{key}": value for key, value in measure(model).items()})
            finally:
                model.set_retriever(in_service)
        return metrics

    return evaluate


def reading_worlds(args: DemoArguments, target: SyntheticKnowledge) -> Iterator[SyntheticKnowledge]:
    """The reading warm start's worlds: the same invented people's names (none of the target world's words), new facts
    in each, so that no fact can be memorised across them; set in the target world's places when
    `args.reading_in_target_places` (no target fact is ever stated: its people are not there)."""
    geography = target.geography if args.reading_in_target_places else None
    target_words = target.vocabulary()
    epoch = 0
    while True:
        yield make_synthetic_knowledge(
            num_people=_READING_PEOPLE, num_cities=args.num_cities, seed=args.seed + 1 + epoch,
            entity_seed=args.seed + _READING_ENTITY_SEED, name_pool_size=_READING_NAME_POOL,
            exclude_words=target_words, geography=geography,
        )  # fmt: skip
        epoch += 1


_READING_PEOPLE, _READING_NAME_POOL, _READING_ENTITY_SEED = 2000, 100, 10_000


def _shift_doc_ids(dataset: datasets.Dataset, offset: int) -> datasets.Dataset:
    return dataset.map(lambda row: {"doc_id": row["doc_id"] + offset}) if offset else dataset


def train_reading_warm_start(model, tokenizer, worlds, args: DemoArguments) -> list[dict]:
    """Teaches the knowledge-augmented encoder to read (`fit_masked_lm_head` with `train_encoder`): masked sentences
    of `worlds`, each read beside the *other* document of its person (where the masked fact is also stated; the
    embedders are untouched). Takes as many worlds as `reading_steps` batches need, so no sentence is read twice.
    Single process.

    Returns the logged history (`step`, `loss`, `masked_lm_accuracy` every 50 steps).
    """
    needed = args.reading_steps * args.per_device_train_batch_size
    documents, sentences, offset = [], [], 0
    while sum(len(part) for part in sentences) < needed:
        world = next(worlds)
        tagged = tag_salient_spans(world.documents, tokenizer)  # people's documents are 0 .. 2 * people - 1
        tagged = tagged.filter(lambda row: len(row["salient_spans"]) > 0 and row["doc_id"] < 2 * _READING_PEOPLE)
        documents.append(_shift_doc_ids(world.documents, offset))
        sentences.append(_shift_doc_ids(tagged, offset))
        offset += len(world.documents)  # even: a person's documents stay 2p and 2p + 1
    corpus = tokenize_blocks(datasets.concatenate_datasets(documents), tokenizer)
    # Served through a retriever for its input formats; the placeholder index is never searched.
    placeholder = RealmIndex.build(corpus, np.zeros((len(corpus), model.config.retriever_proj_size), np.float32))
    settings = MaskedLMHeadFitting(
        max_steps=args.reading_steps, batch_size=args.per_device_train_batch_size,
        learning_rate=args.reading_learning_rate, train_encoder=True, weight_decay=0.01, lr_scheduler_type="linear",
        warmup_steps=min(20, args.reading_steps), max_grad_norm=1.0, logging_steps=50, seed=args.seed,
        disable_tqdm=args.disable_tqdm,
    )  # fmt: skip
    collator = DataCollatorForRealmPreTraining(tokenizer, masking="salient_span", max_length=48, seed=args.seed)
    # The two documents of a person are 2p and 2p + 1: each is the other's evidence.
    return fit_masked_lm_head(
        model, RealmRetriever(placeholder, tokenizer), datasets.concatenate_datasets(sentences), collator, settings,
        evidence=lambda doc_ids: [doc ^ 1 for doc in doc_ids],
    )  # fmt: skip


def held_out_split(num_people: int, fraction: float, seed: int) -> set[int]:
    """Documents of `fraction` of the people, drawn at random: their sentences are kept out of pre-training."""
    rng = np.random.default_rng(seed)
    people = rng.choice(num_people, int(fraction * num_people), replace=False)
    return {int(doc) for person in people for doc in (2 * person, 2 * person + 1)}


def fact_splits(knowledge: SyntheticKnowledge, held_out_docs: set[int], num_eval_facts: int, seed: int):
    """The demo's fact sets: `(training_facts, eval_facts, held_out_facts)`, the facts of the pre-training sentences
    (shuffled), the first `num_eval_facts` of them, and the facts of the held-out documents."""
    training_facts = knowledge.facts.filter(lambda row: row["doc_id"] not in held_out_docs).shuffle(seed=seed)
    eval_facts = training_facts.select(range(min(num_eval_facts, len(training_facts))))
    held_out_facts = knowledge.facts.filter(lambda row: row["doc_id"] in held_out_docs)
    return training_facts, eval_facts, held_out_facts


def run_demo(args: DemoArguments) -> dict:
    """Runs the demo and writes `report.json` (and `report.png` when matplotlib is installed) to `output_dir`."""
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    output_dir = Path(args.output_dir)
    knowledge = make_synthetic_knowledge(num_people=args.num_people, num_cities=args.num_cities, seed=args.seed)
    # The reading worlds' words are in the vocabulary whenever the encoder reads them or was trained on them.
    with_reading = args.reading_steps > 0 or args.reader_from is not None
    worlds = reading_worlds(args, knowledge) if with_reading else iter(())
    first_world = next(worlds, None)
    vocabulary = knowledge.vocabulary()
    if first_world is not None:
        worlds = itertools.chain([first_world], worlds)
        vocabulary += sorted(set(first_world.vocabulary()) - set(vocabulary))
    tokenizer = build_tokenizer(vocabulary, output_dir / "tokenizer")
    corpus = tokenize_blocks(knowledge.documents, tokenizer)
    held_out_docs = held_out_split(args.num_people, args.held_out_fraction, args.seed)
    sentences = tag_salient_spans(knowledge.documents, tokenizer)
    sentences = sentences.filter(lambda row: len(row["salient_spans"]) > 0 and row["doc_id"] not in held_out_docs)
    model = RealmForPreTraining(demo_config(tokenizer, args))
    _, facts, held_out_facts = fact_splits(knowledge, held_out_docs, args.num_eval_facts, args.seed)
    evaluate = make_fact_evaluator(tokenizer, facts, np.asarray(corpus["doc_id"]), held_out_facts, corpus=corpus)
    at_random_init = _initial_eval(
        model, build_index(corpus, model.embedder, tokenizer, show_progress=False), tokenizer, evaluate
    )
    reading_began, reading_history = time.perf_counter(), []
    if args.reader_from is not None:
        _load_reader(model, output_dir / "tokenizer" / "vocab.txt", Path(args.reader_from))
    elif args.reading_steps:
        reading_history = train_reading_warm_start(model, tokenizer, worlds, args)
        model.encoder.save_pretrained(output_dir / READER_DIR)
        shutil.copyfile(output_dir / "tokenizer" / "vocab.txt", output_dir / READER_DIR / "vocab.txt")
    reading_seconds = time.perf_counter() - reading_began
    ict_history, ict_began = [], time.perf_counter()
    if args.ict_steps > 0:
        ict_examples = prepare_ict_examples(knowledge.documents, tokenizer)
        ict_collator = DataCollatorForInverseClozeTask(
            tokenizer, query_max_length=48, block_max_length=128, seed=args.seed
        )
        ict_args = InverseClozeTaskArguments(
            max_steps=args.ict_steps, per_device_train_batch_size=args.per_device_train_batch_size,
            learning_rate=args.ict_learning_rate, seed=args.seed, disable_tqdm=args.disable_tqdm,
            output_dir=args.output_dir,
        )  # fmt: skip
        ict_history = train_inverse_cloze_task(model, ict_examples, ict_collator, ict_args)
    ict_seconds = time.perf_counter() - ict_began
    index = build_index(corpus, model.embedder, tokenizer, show_progress=False)
    atomic_write_text(output_dir / ARGS_FILE, args.to_json_string())
    _save_warm_start(model, tokenizer, index, output_dir / WARM_START_DIR)
    collator = DataCollatorForRealmPreTraining(tokenizer, masking=args.masking, max_length=48, seed=args.seed)
    before = _initial_eval(model, index, tokenizer, evaluate)
    began = time.perf_counter()
    history = train_realm(model, tokenizer, index, sentences, collator, args, eval_fn=evaluate)
    report = {
        "documents": len(knowledge.documents),
        "training_sentences": len(sentences),
        "eval_facts": len(facts),
        "held_out_facts": len(held_out_facts),
        "chance_retrieval_accuracy": 1 / (len(knowledge.documents) - 1),
        "random_init": at_random_init,
        "before": before,
        # With a stale index, also what the towers learned (`fresh_index_*`: against the corpus re-embedded).
        "after": {k: v for k, v in history[-1].items() if k.removeprefix("fresh_index_") in before},
        "seconds": time.perf_counter() - began,
        "ict_seconds": ict_seconds,
        "reading_seconds": reading_seconds,
        "reading_history": reading_history,
        "total_seconds": time.perf_counter() - started,
        "steps": args.max_steps,
        "ict_history": ict_history,
        "history": history,
    }
    if args.push_to_hub:
        card = RealmModelCardData(
            model_description=(
                "REALM pre-trained by `realm-hf pretrain` on its generated world of invented facts: top-1 retrieval of "
                f"the evidence document {before['retrieval_accuracy']:.1%} after the warm starts -> "
                f"{report['after']['retrieval_accuracy']:.1%} after {args.max_steps} steps of REALM pre-training."
            ),
        )
        commit = publish_realm(model, tokenizer, model.retriever, repo_id=args.repo_id, card=card)
        report["hub_commit"] = commit.commit_url
        logger.info(f"Published to {commit.commit_url}.")
    atomic_write_text(output_dir / "report.json", json.dumps(report, indent=2))
    _plot(history, at_random_init, before, output_dir / "report.png")
    return report


def _save_warm_start(model, tokenizer, index, directory: Path) -> None:
    """The model after the warm starts, with the index built from it, as a loadable checkpoint (atomically)."""
    card = RealmModelCardData(
        model_description=(
            "The starting point of REALM pre-training in `realm-hf pretrain`: the encoder after its reading warm start "
            "and the retriever after its ICT warm start, before any REALM step (the ORQA-style baseline)."
        )
    )
    save_realm(directory, model, tokenizer, index, card=card, replace=True)


def _load_reader(model, run_vocab: Path, path: Path) -> None:
    """Loads the knowledge-augmented encoder saved by a reading warm start, refusing another vocabulary."""
    vocab = path / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"reader_from: {path} has no vocab.txt (expected a {READER_DIR}/ of a demo run).")
    if vocab.read_text(encoding="utf-8") != run_vocab.read_text(encoding="utf-8"):
        raise ValueError(
            f"reader_from: the vocabulary in {vocab} is not this run's; the world settings (num_people, num_cities, "
            "seed) must match the run that saved it."
        )
    encoder = RealmKnowledgeAugEncoder.from_pretrained(path)
    model.encoder.load_state_dict(encoder.state_dict())


def _initial_eval(model, index, tokenizer, evaluate) -> dict:

    retriever = RealmRetriever(index, tokenizer)
    model.set_retriever(retriever)
    model.eval()
    with torch.no_grad():
        result = evaluate(model, retriever, 0)
    model.train()
    return result


def _plot(history: list[dict], at_random_init: dict, before: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping the plot (pip install matplotlib).")
        return
    steps = [r["step"] for r in history]
    evals = [(0, before)] + [(r["step"], r) for r in history if "retrieval_accuracy" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    left.plot(steps, [r["loss"] for r in history])
    left.set(title="Marginal masked-LM loss", xlabel="REALM pre-training step", ylabel="loss")
    x = [s for s, _ in evals]
    curves = (
        ("retrieval_accuracy", "retrieval top-1", "o", "-"),
        ("eval_masked_lm_accuracy", "masked-LM", "s", "-"),
        ("held_out_retrieval_accuracy", "retrieval top-1, held-out sentences", "o", "--"),
        ("held_out_masked_lm_accuracy", "masked-LM, held-out sentences", "s", "--"),
    )
    for key, label, marker, style in curves:
        if key in before:
            right.plot(x, [r[key] for _, r in evals], marker=marker, linestyle=style, label=label)
    right.plot([0], [at_random_init["retrieval_accuracy"]], marker="x", linestyle="", color="gray",
               label="retrieval top-1 at random initialisation")  # fmt: skip
    right.set(title="Accuracy on masked facts", xlabel="REALM pre-training step (after the warm starts)",
              ylim=(-0.02, 1.02))  # fmt: skip
    # Below the axes, so that the legend never covers a curve.
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize="small", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
