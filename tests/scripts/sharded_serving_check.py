"""Run with torchrun (2 processes): open-QA answers from a model whose retriever searches a sharded index, each
process answering its own questions (the same number of batches each). Writes OUTPUT_DIR/answers-<RANK>.json.

Usage: torchrun --nproc_per_node 2 sharded_serving_check.py MODEL_DIR OUTPUT_DIR QUESTIONS_JSON
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist

from realm_hf import RealmRetriever, ShardedRealmIndex, answer_questions, load_realm


def main() -> None:
    model_dir, output_dir, questions = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    model, tokenizer, retriever = load_realm(model_dir)
    sharded = ShardedRealmIndex.from_index(retriever.index)
    model.set_retriever(RealmRetriever(sharded, tokenizer))
    mine = questions[rank::world_size]
    answers = answer_questions(model.eval(), tokenizer, mine, batch_size=2)
    result = {"world_size": world_size, "shard": [sharded.start, sharded.end], "questions": mine,
              "answers": [a.to_dict() for a in answers]}  # fmt: skip
    (output_dir / f"answers-{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
