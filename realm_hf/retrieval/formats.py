"""The token layouts of REALM's inputs, built in one place.

* **Document tower** (the index's embeddings, and the candidates re-embedded during pre-training):
  `[CLS] title [SEP] body [SEP]`, token type 0 up to the first `[SEP]` and 1 after it. The title keeps at most
  `max_length // 2 - 2` tokens, the body what is left. The null document is the empty title and body.
* **Knowledge-augmented encoder** (pre-training): `[CLS] masked sentence [SEP] body [SEP]`, the body cut as in the
  document tower (so the encoder reads what the retriever scored).
* **Reader** (open-QA): `[CLS] question [SEP] body [SEP]`, both cut by the `tokenizers` library's longest-first
  pair truncation ([`longest_first_lengths_array`]), as the original implementation tokenized them.

The index, the pre-training model and the ICT warm start must build document-tower inputs identically, or the
retriever would be trained on, or score, blocks laid out differently from how they were indexed; all call
[`document_tower_inputs`] / [`truncate_document`] / [`pair`] from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def truncate_document(title: Sequence[int], body: Sequence[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut a block's title and body to fit `[CLS] title [SEP] body [SEP]` in `max_length` tokens.

    The title keeps at most `max_length // 2 - 2` tokens; the body keeps what is left.
    """
    title = list(title)[: max(0, max_length // 2 - 2)]
    body = list(body)[: max(0, max_length - 3 - len(title))]
    return title, body


def pair(cls_token_id: int, first: Sequence[int], sep_token_id: int, second: Sequence[int]) -> tuple[list[int], int]:
    """`[CLS] first [SEP] second [SEP]` and the position where the second segment (token type 1) starts."""
    return [cls_token_id, *first, sep_token_id, *second, sep_token_id], len(first) + 2


def pad_pairs(
    rows: Sequence[tuple[list[int], int]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad rows made by [`pair`] to the longest (rounded up to a multiple of `pad_to_multiple_of`, if given):
    `input_ids`, `attention_mask` and `token_type_ids` tensors."""
    length = max(len(ids) for ids, _ in rows)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (ids, second_start) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
        token_type_ids[i, second_start : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def document_tower_inputs(
    titles: Sequence[Sequence[int]],
    bodies: Sequence[Sequence[int]],
    cls_token_id: int,
    sep_token_id: int,
    pad_token_id: int,
    max_length: int = 288,
) -> dict[str, torch.Tensor]:
    """Document-tower inputs `[CLS] title [SEP] body [SEP]` of blocks, cut by [`truncate_document`] and padded to the
    longest row.

    Args:
        titles, bodies (sequences of token id lists):
            The blocks' title and body token ids, without special tokens (empty lists for the null document).
        cls_token_id, sep_token_id, pad_token_id (`int`):
            The tokenizer's special tokens.
        max_length (`int`, *optional*, defaults to 288):
            The longest input (`config.block_seq_len`).

    Returns:
        `dict` with `input_ids`, `attention_mask` and `token_type_ids` of shape `(num_blocks, length)`.
    """
    rows = []
    for title, body in zip(titles, bodies):
        title, body = truncate_document(title, body, max_length)
        rows.append(pair(cls_token_id, title, sep_token_id, body))
    return pad_pairs(rows, pad_token_id)


def longest_first_lengths_array(len_a: np.ndarray, len_b: np.ndarray, budget: int) -> np.ndarray:
    """Lengths two segments keep under the `tokenizers` library's longest-first pair truncation, for arrays of segment
    lengths (broadcast together).

    Args:
        len_a, len_b (`np.ndarray` of int): Lengths of the first and second segments.
        budget (`int`): Tokens available for both segments.

    Returns:
        `np.ndarray` of shape `broadcast(len_a, len_b).shape + (2,)`: the kept lengths of both segments.
    """
    len_a, len_b = np.broadcast_arrays(np.asarray(len_a, dtype=np.int64), np.asarray(len_b, dtype=np.int64))
    swap = len_a > len_b
    shorter, longer = np.where(swap, len_b, len_a), np.where(swap, len_a, len_b)
    longer = np.where(shorter > budget, shorter, np.maximum(shorter, budget - shorter))
    over = shorter + longer > budget
    shorter = np.where(over, budget // 2, shorter)
    longer = np.where(over, budget // 2 + budget % 2, longer)
    kept_a = np.minimum(np.where(swap, longer, shorter), len_a)
    kept_b = np.minimum(np.where(swap, shorter, longer), len_b)
    fits = len_a + len_b <= budget
    return np.stack([np.where(fits, len_a, kept_a), np.where(fits, len_b, kept_b)], axis=-1)
