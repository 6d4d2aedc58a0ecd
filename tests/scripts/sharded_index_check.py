"""Run with torchrun (2 processes): the sharded index against a single index over the same corpus, every process
holding the single one for comparison. Writes OUTPUT_DIR/rank-<R>.json with what each compared.

Usage: torchrun --nproc_per_node 2 sharded_index_check.py OUTPUT_DIR SINGLE_INDEX_DIR ONE_SHARD_DIR

SINGLE_INDEX_DIR: a plain saved index; ONE_SHARD_DIR: the same saved as a sharded index by one process. Saves the
2-shard index to OUTPUT_DIR/two-shards.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from realm_hf import RealmConfig, RealmEmbedder, RealmIndex, RealmTokenizerFast, ShardedRealmIndex, refresh_index


def main() -> None:
    output_dir, single_dir, one_shard_dir = (Path(p) for p in sys.argv[1:4])
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    single = RealmIndex.from_pretrained(single_dir)
    sharded = ShardedRealmIndex.from_index(single)
    result = {"world_size": world_size, "shard": [sharded.start, sharded.end], "num_blocks": len(sharded)}

    # Each process its own queries, a different number each (the second process also asks for none at all).
    generator = torch.Generator().manual_seed(100 + rank)
    queries = torch.randn(5 + 3 * rank, single.embedding_dim, generator=generator).numpy()
    for k in (1, 5, len(single)):
        scores, ids = sharded.search(queries, k)
        expected_scores, expected_ids = single.search(queries, k)
        result[f"k={k}"] = {"ids": ids.tolist(), "expected_ids": expected_ids.tolist(),
                            "max_score_diff": float(np.abs(scores - expected_scores).max())}  # fmt: skip
    empty = sharded.search(queries[: 0 if rank == 1 else 2], 3)[1]
    result["empty_query_shapes"] = list(empty.shape)
    block_ids = np.arange(len(single)).reshape(-1, 1)[rank::2]  # each process asks for other processes' blocks too
    result["get_embeddings_equal"] = bool(
        np.array_equal(sharded.get_embeddings(block_ids), single.get_embeddings(block_ids))
    )

    # The sharded refresh (each process embeds its blocks only) equals the single index's refresh.
    tokenizer = RealmTokenizerFast.from_pretrained(single_dir.parent / "tokenizer")
    torch.manual_seed(7)
    embedder = RealmEmbedder(RealmConfig.from_pretrained(single_dir.parent / "embedder")).eval()
    fresh_sharded = refresh_index(embedder, sharded, tokenizer, batch_size=4)
    fresh_single = refresh_index(embedder, single, tokenizer, batch_size=4)
    everything = np.arange(len(single))
    result["refresh_max_diff"] = float(
        np.abs(fresh_sharded.get_embeddings(everything) - fresh_single.embeddings).max()
    )
    result["refresh_embedded_rows"] = len(fresh_sharded.shard)

    # Saved with 2 shards, loaded with 2; a 1-shard save re-sharded over 2 on load.
    fresh_sharded.save_pretrained(output_dir / "two-shards")
    reloaded = ShardedRealmIndex.from_pretrained(output_dir / "two-shards")
    resharded = ShardedRealmIndex.from_pretrained(one_shard_dir)
    result["reload_same_ids"] = fresh_sharded.search(queries, 5)[1].tolist() == reloaded.search(queries, 5)[1].tolist()
    result["reshard"] = [resharded.start, resharded.end]
    result["reshard_same_ids"] = resharded.search(queries, 5)[1].tolist() == single.search(queries, 5)[1].tolist()
    (output_dir / f"rank-{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
