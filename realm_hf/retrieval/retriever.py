"""REALM retriever: search the knowledge index, build reader inputs from pre-tokenized blocks, label answers.

Unlike the original implementation, which decoded every retrieved block back to text and re-tokenized it with the
question (5,000 blocks per training step), the retriever works on the block token ids stored in the index's corpus:
inputs `[CLS] question [SEP] block [SEP]` are assembled from ids, with the tokenizer's longest-first truncation, and
answer spans are found with vectorised matching over all retrieved blocks at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from huggingface_hub import CommitInfo
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from ..logging import get_logger
from .formats import document_tower_inputs, longest_first_lengths_array, pad_pairs, pair, truncate_document
from .index import RealmIndex
from .index_format import INDEX_SUBFOLDER, is_saved_index
from .legacy import (
    LEGACY_BLOCK_RECORDS_NAME,
    PickleNotAllowedError,
    legacy_corpus,
    load_block_records,
    load_legacy_block_emb,
    load_legacy_block_records,
    save_block_records,
)
from .loading import load_index
from .storage import check_upload_target, resolve_directory, upload_folder


logger = get_logger(__name__)

_RECORDS_ONLY = (
    "This retriever was built from block records alone (the transformers-4 constructor) and cannot search: use "
    "RealmRetriever(index, tokenizer) over a RealmIndex with the block embeddings (RealmIndex.build, or "
    "RealmIndex.from_legacy with the original checkpoint's block_emb)."
)


def find_answer_spans(
    blocks: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray], answers: Sequence[Sequence[int]]
) -> list[list[tuple[int, int]]]:
    """Finds every occurrence of every answer in every block.

    Occurrences are listed answer by answer, then by position, as the original `block_has_answer` did.

    Args:
        blocks: Token ids of each block, as a list of lists or as `(values, offsets)` of a flattened list array.
        answers: Token ids of each acceptable answer (empty answers are ignored).

    Returns:
        For each block, a list of `(start, end)` token positions (end inclusive) relative to the block start.
    """
    if isinstance(blocks, tuple):
        values, offsets = blocks
    else:
        offsets = np.zeros(len(blocks) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in blocks])
        values = np.fromiter((t for b in blocks for t in b), dtype=np.int64, count=int(offsets[-1]))
    num_blocks = len(offsets) - 1
    spans: list[list[tuple[int, int]]] = [[] for _ in range(num_blocks)]
    values = np.asarray(values, dtype=np.int64)
    for answer in answers:
        width = len(answer)
        if width == 0 or width > len(values):
            continue
        answer = np.asarray(answer, dtype=np.int64)
        # Positions of the first token, narrowed token by token (far cheaper than comparing every window).
        hits = np.flatnonzero(values[: len(values) - width + 1] == answer[0])
        for position in range(1, width):
            if hits.size == 0:
                break
            hits = hits[values[hits + position] == answer[position]]
        if hits.size == 0:
            continue
        block_of_hit = np.searchsorted(offsets, hits, side="right") - 1
        in_block = hits + width <= offsets[block_of_hit + 1]
        for block, start in zip(block_of_hit[in_block].tolist(), (hits - offsets[block_of_hit])[in_block].tolist()):
            spans[block].append((start, start + width - 1))
    return spans


class RealmRetriever:
    r"""
    Retrieves evidence blocks for questions and prepares them for [`RealmReader`] or [`RealmForOpenQA`].

    The retriever is data, not weights: it pairs a [`RealmIndex`] (corpus + embeddings + FAISS index) with the
    tokenizer whose ids the corpus stores.

    Args:
        index ([`RealmIndex`]): The knowledge index. Its corpus must have a `token_ids` column.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): The tokenizer that produced the corpus token ids.
        block_records (`np.ndarray`, *optional*): The transformers-4 constructor, `RealmRetriever(block_records,
            tokenizer)` (positionally too), builds a [`BlockRecordsRetriever`]: the blocks as UTF-8 bytes or
            strings, without embeddings, and the original call.

    Example:

    ```python
    >>> retriever = RealmRetriever(index, tokenizer)
    >>> batch = retriever(query_embeddings, question_input_ids=questions.input_ids, num_retrieved=5, num_read=5)
    >>> batch["input_ids"].shape  # (num_questions, num_read, seq_len)
    ```
    """

    def __new__(cls, *args, **kwargs):
        # The transformers-4 constructor, `RealmRetriever(block_records, tokenizer)`: a retriever of block records.
        if cls is RealmRetriever and _block_records_call(args, kwargs):
            return super().__new__(BlockRecordsRetriever)
        return super().__new__(cls)

    def __init__(self, index: RealmIndex | None = None, tokenizer: PreTrainedTokenizerBase | None = None):
        if tokenizer is None:
            raise TypeError("RealmRetriever needs the tokenizer of the corpus (`tokenizer=`).")
        if index is None:
            raise TypeError("RealmRetriever needs a RealmIndex (or, as in transformers 4, block_records).")
        self.index = index
        self._set_corpus(index.corpus, tokenizer)

    def _set_corpus(self, corpus: datasets.Dataset, tokenizer: PreTrainedTokenizerBase) -> None:
        if "token_ids" not in corpus.column_names:
            raise ValueError(
                "RealmRetriever needs a corpus with pre-tokenized blocks (a `token_ids` column); build it with "
                "`realm_hf.retrieval.corpus.split_documents_into_blocks`."
            )
        self.corpus = corpus
        self.tokenizer = tokenizer
        self._token_ids: pa.ChunkedArray = corpus.data.column("token_ids")
        specials = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
        if any(s is None for s in specials):
            raise ValueError("RealmRetriever needs a tokenizer with [CLS], [SEP] and [PAD] tokens.")
        self.cls_token_id, self.sep_token_id, self.pad_token_id = specials

    # ---------------------------------------------------------------------------------------------------------------
    # Persistence
    # ---------------------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Saves the tokenizer files and the index (in the `index/` subfolder)."""
        os.makedirs(save_directory, exist_ok=True)
        self.tokenizer.save_pretrained(save_directory)
        self.index.save_pretrained(os.path.join(save_directory, INDEX_SUBFOLDER))

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str = "Upload REALM retriever with realm_hf",
        commit_description: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        private: bool | None = None,
        token: str | bool | None = None,
    ) -> CommitInfo:
        r"""
        Uploads what [`save_pretrained`] writes (tokenizer files and `index/`, replacing a previous `index/`) to a
        model repository in one commit; `RealmRetriever.from_pretrained(repo_id)` loads it back. Arguments as for
        [`~realm_hf.retrieval.storage.upload_folder`].
        """
        repo_id, token = check_upload_target(repo_id, revision, create_pr, token)
        with tempfile.TemporaryDirectory(prefix="realm_hf-retriever-") as folder:
            self.save_pretrained(folder)
            return upload_folder(
                folder, repo_id, repo_type="model", delete_patterns=[f"{INDEX_SUBFOLDER}/**"],
                commit_message=commit_message, commit_description=commit_description, revision=revision,
                create_pr=create_pr, private=private, token=token,
            )  # fmt: skip

    @classmethod
    def from_pretrained(
        cls,
        pretrained_name_or_path: str | os.PathLike,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        allow_pickle: bool = False,
        mmap: bool = True,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        **tokenizer_kwargs,
    ) -> RealmRetriever:
        r"""
        Loads a retriever from a local directory or a Hub repository: one written by
        [`~RealmRetriever.save_pretrained`] or `realm_hf.save_realm` (tokenizer files and an `index/` folder), or a
        checkpoint of the original transformers REALM (`vocab.txt`, `block_records.npy` and the block embeddings in
        its weights), whose `block_records.npy` is a pickle and is read only with `allow_pickle=True`. Block records
        without embeddings (a [`BlockRecordsRetriever`]'s `block_records/`, or a transformers-4 retriever's
        `block_records.npy` alone) load as a [`BlockRecordsRetriever`].

        Args:
            pretrained_name_or_path (`str` or `os.PathLike`): A local directory or a Hub model repository id.
            tokenizer (`PreTrainedTokenizerBase`, *optional*): The question tokenizer; loaded from the same place
                when not given.
            allow_pickle (`bool`, *optional*, defaults to `False`): Allow reading a legacy `block_records.npy`.
            mmap (`bool`, *optional*, defaults to `True`): Memory-map the index files.
            revision, token, cache_dir, local_files_only: Hub options, as for every `from_pretrained`.
            tokenizer_kwargs: Passed to `AutoTokenizer.from_pretrained`.

        Raises:
            `ValueError`: if there is no index there, or only a legacy one and `allow_pickle` is not set.
        """

        directory = resolve_directory(
            pretrained_name_or_path, revision=revision, token=token, cache_dir=cache_dir,
            local_files_only=local_files_only,
        )  # fmt: skip
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(directory, **tokenizer_kwargs)
        index = load_index_in(directory, tokenizer, allow_pickle=allow_pickle, mmap=mmap)
        if index is not None:
            return cls(index, tokenizer)
        records = load_block_records(directory)
        if records is None and (directory / LEGACY_BLOCK_RECORDS_NAME).is_file():  # no weights with block_emb
            records = load_legacy_block_records(directory / LEGACY_BLOCK_RECORDS_NAME, allow_pickle=allow_pickle)
        if records is None:
            raise ValueError(
                f"{pretrained_name_or_path} holds no knowledge index: expected {INDEX_SUBFOLDER}/ (written by "
                f"RealmRetriever.save_pretrained or realm_hf.save_realm) or a legacy {LEGACY_BLOCK_RECORDS_NAME}."
            )
        return BlockRecordsRetriever(records, tokenizer)

    # ---------------------------------------------------------------------------------------------------------------
    # Retrieval
    # ---------------------------------------------------------------------------------------------------------------

    def block_token_ids(self, block_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of the given blocks as `(values, offsets)` of a flattened list array (no Python lists)."""
        return self._gather_ragged(self._token_ids, block_ids)

    def question_token_ids(
        self, question_input_ids: torch.Tensor | Sequence[Sequence[int]], attention_mask: torch.Tensor | None = None
    ) -> list[list[int]]:
        """Question token ids without `[CLS]`, `[SEP]` and padding."""
        if isinstance(question_input_ids, torch.Tensor):
            mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(question_input_ids).bool()
            rows = [ids[m].tolist() for ids, m in zip(question_input_ids, mask)]
        else:
            rows = [list(ids) for ids in question_input_ids]
        drop = {self.cls_token_id, self.sep_token_id, self.pad_token_id}
        return [[t for t in row if t not in drop] for row in rows]

    def reader_question_ids(
        self, question_input_ids: torch.Tensor | Sequence[Sequence[int]], attention_mask: torch.Tensor | None = None
    ) -> list[list[int]]:
        """Question token ids as the reader reads them, as the original implementation built them: the question is
        decoded with `skip_special_tokens=True` and tokenized again, so `[UNK]`, `[MASK]` and other special tokens
        are dropped (a question with a character outside the vocabulary reads without its `[UNK]`)."""
        texts = self.tokenizer.batch_decode(
            self.question_token_ids(question_input_ids, attention_mask), skip_special_tokens=True
        )
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def __call__(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        r"""Retrieves blocks for questions and builds the reader inputs ([`~RealmRetriever.retrieve`]); a retriever
        built the transformers-4 way ([`BlockRecordsRetriever`]) keeps the original call instead."""
        return self.retrieve(*args, **kwargs)

    def encode_retrieved(
        self,
        retrieved_block_ids: np.ndarray | torch.Tensor | Sequence[int],
        question_input_ids: torch.Tensor | Sequence[Sequence[int]],
        answer_ids: list[list[int]] | None = None,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
    ) -> tuple:
        r"""
        The transformers-4 `RealmRetriever.__call__`: the reader inputs of one question over given blocks, and where
        its answers are in them.

        Args:
            retrieved_block_ids (1-D array of int): The blocks, as corpus rows.
            question_input_ids: The tokenized question (a batch of one; the first row is used, as originally).
            answer_ids (`list[list[int]]`, *optional*): The answers as token id lists.
            max_length (`int`, *optional*): Maximum reader input length (default: the tokenizer's, at most 512).
            return_tensors (`str`, *optional*, defaults to `"pt"`): Type of the `concat_inputs` tensors.

        Returns:
            `tuple`: `(has_answers, start_pos, end_pos, concat_inputs)`, as the original returned them: lists (`k`
            booleans; `k` lists of `max_answers` token positions, -1 padded), or `None` each without `answer_ids`;
            and a `BatchEncoding` with `input_ids`, `attention_mask`, `token_type_ids` and `special_tokens_mask`.
        """
        if torch.is_tensor(retrieved_block_ids):
            retrieved_block_ids = retrieved_block_ids.cpu().numpy()
        block_ids = np.asarray(retrieved_block_ids)
        if block_ids.dtype.kind not in "iu":
            raise TypeError(f"encode_retrieved takes block ids (integers), got {block_ids.dtype}.")
        if max_length is None:
            max_length = min(int(self.tokenizer.model_max_length), 512)
        question = self.reader_question_ids(list(question_input_ids)[:1])
        batch = self.encode_candidates(
            block_ids.reshape(1, -1), question, [answer_ids] if answer_ids is not None else None, max_length=max_length
        )
        input_ids = batch["input_ids"][0]
        positions = torch.arange(input_ids.size(-1))
        first_sep = (input_ids == self.sep_token_id).int().argmax(-1, keepdim=True)
        in_question = (positions >= 1) & (positions < first_sep)
        concat_inputs = BatchEncoding(
            {
                "input_ids": input_ids.numpy(),
                "attention_mask": batch["attention_mask"][0].numpy(),
                "token_type_ids": batch["token_type_ids"][0].numpy(),
                "special_tokens_mask": (~(in_question | batch["block_mask"][0])).long().numpy(),
            },
            tensor_type=return_tensors,
        )
        if answer_ids is None:
            return None, None, None, concat_inputs
        return (
            batch["has_answers"][0].tolist(),
            batch["start_positions"][0].tolist(),
            batch["end_positions"][0].tolist(),
            concat_inputs,
        )

    def retrieve(
        self,
        query_embeddings: torch.Tensor | np.ndarray,
        question_input_ids: torch.Tensor | Sequence[Sequence[int]],
        question_attention_mask: torch.Tensor | None = None,
        answer_ids: list[list[list[int]]] | None = None,
        num_retrieved: int = 5,
        num_read: int | None = None,
        max_length: int = 320,
        gold_doc_ids: Sequence[Sequence[int]] | None = None,
    ) -> dict[str, torch.Tensor]:
        r"""
        Retrieves the top `num_retrieved` blocks for each question and builds the reader inputs of the first
        `num_read`.

        Args:
            query_embeddings (`torch.Tensor` of shape `(batch_size, dim)`): Question embeddings.
            question_input_ids: Tokenized questions (with or without special tokens and padding). As in the original
                implementation, the reader reads them decoded without special tokens and tokenized again
                ([`~RealmRetriever.reader_question_ids`]: no `[UNK]` or `[MASK]`).
            question_attention_mask (`torch.Tensor`, *optional*): Marks real tokens of `question_input_ids`.
            answer_ids (`list`, *optional*): For each question, its answers as token id lists.
            num_retrieved (`int`): Retrieval depth k (capped at the corpus size, with a warning).
            num_read (`int`, *optional*): Blocks turned into reader inputs; defaults to `num_retrieved`.
            max_length (`int`): Maximum reader input length.
            gold_doc_ids (`Sequence[Sequence[int]]`, *optional*): For each question, the `doc_id`s (the corpus'
                `doc_id` column) of its gold documents: returned as `is_gold`, which block of each is one of them.

        Returns:
            `dict` with `retrieved_block_ids` and `retrieval_scores` (`(batch, k)`), `retrieved_embeddings`
            (`(batch, k, dim)`), the reader inputs `input_ids`, `attention_mask`, `token_type_ids`, `block_mask`
            (`(batch, num_read, seq_len)`), with answers `has_answers` (`(batch, k)`), `start_positions` and
            `end_positions` (`(batch, num_read, max_answers)`, padded with -1), and with gold documents `is_gold`
            (`(batch, k)`).
        """
        queries = _as_numpy(query_embeddings)
        num_blocks = len(self.index)
        if num_retrieved > num_blocks:
            logger.warning_once(
                f"Asked for {num_retrieved} blocks per question but the corpus has {num_blocks}; retrieving {num_blocks}."
            )
            num_retrieved = num_blocks
        scores, block_ids = self.index.search(queries, num_retrieved)
        embeddings = self.index.get_embeddings(block_ids)
        batch = self.encode_candidates(
            block_ids,
            self.reader_question_ids(question_input_ids, question_attention_mask),
            answer_ids=answer_ids,
            num_read=num_read,
            max_length=max_length,
        )
        batch["retrieved_block_ids"] = torch.from_numpy(np.asarray(block_ids, dtype=np.int64))
        if gold_doc_ids is not None:
            batch["is_gold"] = torch.from_numpy(self.is_gold_block(block_ids, gold_doc_ids))
        batch["retrieval_scores"] = torch.from_numpy(np.asarray(scores, dtype=np.float32))
        batch["retrieved_embeddings"] = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
        return batch

    def encode_candidates(
        self,
        block_ids: np.ndarray,
        question_token_ids: Sequence[Sequence[int]],
        answer_ids: list[list[list[int]]] | None = None,
        num_read: int | None = None,
        max_length: int = 320,
    ) -> dict[str, torch.Tensor]:
        r"""
        Builds `[CLS] question [SEP] block [SEP]` reader inputs from pre-tokenized blocks and labels answer spans,
        with the semantics of the original `RealmRetriever.__call__` + `block_has_answer`: truncation is longest
        first to `max_length`, rows are padded to the longest row, and an answer counts only inside the (truncated)
        block.

        Args:
            block_ids (`np.ndarray` of shape `(batch_size, k)`): Retrieved block ids, best first.
            question_token_ids: For each question, its token ids without special tokens.
            answer_ids (`list`, *optional*): For each question, its answers as token id lists.
            num_read (`int`, *optional*): Number of leading blocks turned into reader inputs (default: all k).
            max_length (`int`): Maximum length of a reader input.

        Returns:
            `dict` of tensors, see [`~RealmRetriever.__call__`].
        """
        block_ids = np.asarray(block_ids, dtype=np.int64)
        if block_ids.ndim != 2:
            raise ValueError(f"block_ids must have shape (batch_size, k), got {block_ids.shape}.")
        batch_size, k = block_ids.shape
        if len(question_token_ids) != batch_size:
            raise ValueError(f"Got {len(question_token_ids)} questions for {batch_size} rows of block ids.")
        if answer_ids is not None and len(answer_ids) != batch_size:
            raise ValueError(f"Got answers for {len(answer_ids)} questions but {batch_size} questions.")
        if max_length < 4:
            raise ValueError(f"max_length must leave room for [CLS] q [SEP] b [SEP], got {max_length}.")
        num_read = k if num_read is None else min(num_read, k)
        values, offsets = self.block_token_ids(block_ids)
        block_lengths = np.diff(offsets).reshape(batch_size, k)

        # Truncated lengths of every (question, block) pair.
        question_lengths = np.array([len(question) for question in question_token_ids], dtype=np.int64)
        kept = longest_first_lengths_array(question_lengths[:, None], block_lengths, max_length - 3)
        row_lengths = kept[:, :num_read].sum(-1) + 3
        seq_len = int(row_lengths.max()) if num_read > 0 else 0

        input_ids = np.full((batch_size, num_read, seq_len), self.pad_token_id, dtype=np.int64)
        token_type_ids = np.zeros_like(input_ids)
        attention_mask = np.zeros_like(input_ids)
        block_mask = np.zeros(input_ids.shape, dtype=bool)
        for b, question in enumerate(question_token_ids):
            for j in range(num_read):
                n_q, n_b = kept[b, j]
                start = offsets[b * k + j]
                row = [self.cls_token_id, *question[:n_q], self.sep_token_id]
                block_start = len(row)
                row.extend(values[start : start + n_b].tolist())
                row.append(self.sep_token_id)
                input_ids[b, j, : len(row)] = row
                attention_mask[b, j, : len(row)] = 1
                token_type_ids[b, j, block_start : len(row)] = 1
                block_mask[b, j, block_start : block_start + n_b] = True

        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "token_type_ids": torch.from_numpy(token_type_ids),
            "block_mask": torch.from_numpy(block_mask),
        }
        if answer_ids is not None:
            batch.update(self._label_answers(values, offsets, kept, answer_ids, num_read))
        return batch

    def retrieve_for_pretraining(
        self,
        query_embeddings: torch.Tensor | np.ndarray,
        query_token_ids: Sequence[Sequence[int]],
        exclude_doc_ids: torch.Tensor | Sequence[int] | None = None,
        num_candidates: int = 8,
        null_document: bool = True,
        max_block_length: int = 288,
    ) -> dict[str, torch.Tensor]:
        r"""
        Retrieves pre-training candidates for masked sentences, as the original `postprocess_candidates` did: the
        blocks of each sentence's own document are excluded (trivial retrievals) and the null document comes first.

        Args:
            query_embeddings (`torch.Tensor` of shape `(batch_size, dim)`): Embeddings of the masked sentences.
            query_token_ids: For each sentence, its (masked) token ids without special tokens.
            exclude_doc_ids (*optional*): Source document id of each sentence (the corpus' `doc_id` column).
            num_candidates (`int`): Candidates per sentence, the null document included.
            null_document (`bool`): Whether candidate 0 is the null (empty) document.
            max_block_length (`int`): Maximum length of a document-tower input.

        Returns:
            `dict` with `candidate_input_ids`, `candidate_attention_mask`, `candidate_token_type_ids`
            (`[CLS] title [SEP] block [SEP]`, shape `(batch, K, block_len)`), `joint_input_ids`,
            `joint_attention_mask`, `joint_token_type_ids` (`[CLS] x [SEP] block [SEP]`, shape `(batch, K, joint_len)`)
            and `retrieved_block_ids` (`(batch, K)`, -1 for the null document).
        """
        batch_size = len(query_embeddings)
        if len(query_token_ids) != batch_size:
            raise ValueError(f"Got {len(query_token_ids)} query token lists for {batch_size} query embeddings.")
        num_retrieve = num_candidates - int(null_document)
        if num_retrieve < 0:
            raise ValueError("num_candidates must be >= 1 (>= 2 to retrieve anything besides the null document).")
        block_ids = np.zeros((batch_size, 0), dtype=np.int64)
        if num_retrieve > 0:
            block_ids = self.pretraining_candidates(
                query_embeddings, query_token_ids, num_retrieve, exclude_doc_ids, max_block_length
            )
        if null_document:
            block_ids = np.concatenate([np.full((batch_size, 1), -1, dtype=np.int64), block_ids], axis=1)
        return self.pretraining_inputs(block_ids, query_token_ids, max_block_length)

    def pretraining_candidates(
        self,
        query_embeddings: torch.Tensor | np.ndarray,
        query_token_ids: Sequence[Sequence[int]],
        num_retrieve: int,
        exclude_doc_ids: torch.Tensor | Sequence[int] | None = None,
        max_block_length: int = 288,
    ) -> np.ndarray:
        """The retrieved blocks of [`~RealmRetriever.retrieve_for_pretraining`] (without the null document), shape
        `(batch_size, num_retrieve)`: the index searched with `query_embeddings`, the source documents excluded.
        Subclasses change how candidates are found here ([`StaleIndexRetriever`])."""
        return self.search_excluding(_as_numpy(query_embeddings), num_retrieve, exclude_doc_ids)

    def pretraining_inputs(
        self,
        block_ids: torch.Tensor | np.ndarray,
        query_token_ids: Sequence[Sequence[int]],
        max_block_length: int = 288,
    ) -> dict[str, torch.Tensor]:
        r"""
        The document-tower and encoder inputs of given candidate blocks (the second half of
        [`~RealmRetriever.retrieve_for_pretraining`], without the search).

        Args:
            block_ids (`torch.Tensor` or `np.ndarray` of shape `(batch_size, K)`): Corpus rows of the candidates of
                each sentence; -1 stands for the null (empty) document.
            query_token_ids: For each sentence, its (masked) token ids without special tokens.
            max_block_length (`int`): Maximum length of a document-tower input.

        Returns:
            `dict`: as [`~RealmRetriever.retrieve_for_pretraining`].
        """
        block_ids = np.asarray(block_ids.cpu() if torch.is_tensor(block_ids) else block_ids, dtype=np.int64)
        if block_ids.ndim != 2 or block_ids.shape[0] != len(query_token_ids):
            raise ValueError(
                f"block_ids must have shape (batch_size, K) with batch_size={len(query_token_ids)}, got "
                f"{block_ids.shape}."
            )
        if block_ids.size and block_ids.max() >= len(self.corpus):
            raise ValueError(f"block id {int(block_ids.max())} is out of range for {len(self.corpus)} blocks.")
        batch_size, num_k = block_ids.shape
        real = block_ids[block_ids >= 0]
        values, offsets = self.block_token_ids(real)
        title_values, title_offsets = self._gather_ragged(self._title_ids, real)

        candidates, joints = [], []
        position = 0
        for b in range(batch_size):
            query = list(query_token_ids[b])
            for j in range(num_k):
                if block_ids[b, j] < 0:
                    title, body = [], []
                else:
                    title = title_values[title_offsets[position] : title_offsets[position + 1]].tolist()
                    body = values[offsets[position] : offsets[position + 1]].tolist()
                    position += 1
                title, body = truncate_document(title, body, max_block_length)
                candidates.append(pair(self.cls_token_id, title, self.sep_token_id, body))
                joints.append(pair(self.cls_token_id, query, self.sep_token_id, body))
        out = {"retrieved_block_ids": torch.from_numpy(block_ids)}
        for prefix, rows in (("candidate", candidates), ("joint", joints)):
            for key, tensor in pad_pairs(rows, self.pad_token_id).items():
                out[f"{prefix}_{key}"] = tensor.view(batch_size, num_k, -1)
        return out

    def document_inputs(
        self, block_ids: np.ndarray | Sequence[int], max_block_length: int = 288
    ) -> dict[str, torch.Tensor]:
        """Document-tower inputs `[CLS] title [SEP] block [SEP]` of the given corpus rows (flattened), as the index was
        embedded: `input_ids`, `attention_mask` and `token_type_ids` of shape `(num_blocks, length)`."""
        ids = np.asarray(block_ids, dtype=np.int64).reshape(-1)
        values, offsets = self.block_token_ids(ids)
        title_values, title_offsets = self._gather_ragged(self._title_ids, ids)
        titles = [title_values[title_offsets[i] : title_offsets[i + 1]].tolist() for i in range(len(ids))]
        bodies = [values[offsets[i] : offsets[i + 1]].tolist() for i in range(len(ids))]
        return document_tower_inputs(
            titles, bodies, self.cls_token_id, self.sep_token_id, self.pad_token_id, max_length=max_block_length
        )

    def search_excluding(
        self, queries: np.ndarray, num_retrieve: int, exclude_doc_ids: torch.Tensor | Sequence[int] | None
    ) -> np.ndarray:
        """The ids (shape `(batch, num_retrieve)`, by decreasing score) of the best blocks of each query that do not
        come from its `exclude_doc_ids` document (the corpus' `doc_id` column; `None` excludes nothing)."""
        num_blocks = len(self.index)
        if exclude_doc_ids is None:
            k = min(num_retrieve, num_blocks)
            if k < num_retrieve:
                logger.warning_once(f"The corpus has {num_blocks} blocks; retrieving {k} per query.")
            return self.index.search(queries, k)[1]
        exclude = np.asarray(
            exclude_doc_ids.cpu() if torch.is_tensor(exclude_doc_ids) else exclude_doc_ids, dtype=np.int64
        )
        if exclude.shape != (queries.shape[0],):
            raise ValueError(f"exclude_doc_ids must have one id per query, got shape {exclude.shape}.")
        doc_ids = self._doc_ids
        margin = 8
        while True:
            k = min(num_retrieve + margin, num_blocks)
            ids = self.index.search(queries, k)[1]
            keep = doc_ids[ids] != exclude[:, None]
            available = int(keep.sum(axis=1).min())
            if available >= num_retrieve or k == num_blocks:
                break
            margin *= 4
        if available < num_retrieve:
            logger.warning_once(
                f"Only {available} blocks remain after excluding the source documents; retrieving {available}."
            )
        count = min(available, num_retrieve)
        return np.stack([row[mask][:count] for row, mask in zip(ids, keep)])

    def is_gold_block(self, block_ids: np.ndarray, gold_doc_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Whether each block of `block_ids` (shape `(batch, k)`) comes from one of its question's gold documents
        (`gold_doc_ids[b]`, ids of the corpus' `doc_id` column, or rows of a corpus without one); a boolean array of
        the shape of `block_ids`."""
        block_ids = np.asarray(block_ids, dtype=np.int64)
        if len(gold_doc_ids) != len(block_ids):
            raise ValueError(f"Got gold documents for {len(gold_doc_ids)} questions but {len(block_ids)} questions.")
        if any(len(gold) == 0 for gold in gold_doc_ids):
            raise ValueError("Every question needs at least one gold doc id.")
        block_docs = self._doc_ids[block_ids] if "doc_id" in self.corpus.column_names else block_ids
        return np.stack(
            [np.isin(docs, np.asarray(gold, dtype=np.int64)) for docs, gold in zip(block_docs, gold_doc_ids)]
        )

    @property
    def _doc_ids(self) -> np.ndarray:
        if getattr(self, "_doc_ids_cache", None) is None:
            if "doc_id" not in self.corpus.column_names:
                raise ValueError("Excluding source documents needs a `doc_id` column in the corpus.")
            self._doc_ids_cache = self.corpus.data.column("doc_id").to_numpy().astype(np.int64)
        return self._doc_ids_cache

    @property
    def _title_ids(self) -> pa.ChunkedArray | None:
        if "title_token_ids" in self.corpus.column_names:
            return self.corpus.data.column("title_token_ids")
        return None

    @staticmethod
    def _gather_ragged(column: pa.ChunkedArray | None, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if column is None:
            return np.zeros(0, dtype=np.int64), np.zeros(len(ids) + 1, dtype=np.int64)
        taken = column.take(pa.array(np.asarray(ids, dtype=np.int64).ravel()))
        taken = taken.combine_chunks() if isinstance(taken, pa.ChunkedArray) else taken
        offsets = taken.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        values = taken.values.to_numpy(zero_copy_only=False)
        return values[offsets[0] : offsets[-1]], offsets - offsets[0]

    @staticmethod
    def _label_answers(
        values: np.ndarray, offsets: np.ndarray, kept: np.ndarray, answer_ids: list, num_read: int
    ) -> dict[str, torch.Tensor]:
        batch_size, k = kept.shape[:2]
        has_answers = np.zeros((batch_size, k), dtype=bool)
        read_spans: list[list[list[tuple[int, int]]]] = []
        for b, answers in enumerate(answer_ids):
            # Only the kept (truncated) part of each block can hold an answer.
            starts = offsets[b * k : (b + 1) * k]
            kept_lengths = kept[b, :, 1]
            truncated_offsets = np.concatenate([[0], np.cumsum(kept_lengths)])
            gather = np.arange(truncated_offsets[-1], dtype=np.int64) + np.repeat(
                starts - truncated_offsets[:-1], kept_lengths
            )
            spans = find_answer_spans((values[gather], truncated_offsets), answers)
            has_answers[b] = [len(s) > 0 for s in spans]
            shift = kept[b, :num_read, 0] + 2  # [CLS] question [SEP]
            read_spans.append([[(s + shift[j], e + shift[j]) for s, e in spans[j]] for j in range(num_read)])
        max_answers = max((len(s) for rows in read_spans for s in rows), default=0)
        start_positions = np.full((batch_size, num_read, max_answers), -1, dtype=np.int64)
        end_positions = np.full_like(start_positions, -1)
        for b, rows in enumerate(read_spans):
            for j, spans in enumerate(rows):
                for a, (s, e) in enumerate(spans):
                    start_positions[b, j, a], end_positions[b, j, a] = s, e
        return {
            "has_answers": torch.from_numpy(has_answers),
            "start_positions": torch.from_numpy(start_positions),
            "end_positions": torch.from_numpy(end_positions),
        }


class BlockRecordsRetriever(RealmRetriever):
    r"""
    The retriever of transformers 4, `RealmRetriever(block_records, tokenizer)`: the blocks as records, without
    embeddings, tokenized once, and the original call, `retriever(block_ids, question_input_ids, answer_ids,
    max_length=None, return_tensors="pt")` -> `(has_answers, start_pos, end_pos, concat_inputs)`
    ([`~RealmRetriever.encode_retrieved`]). It cannot search: models need a [`RealmRetriever`] over a [`RealmIndex`]
    with the block embeddings ([`RealmIndex.from_legacy`] reads the original `block_records.npy` and `block_emb`).
    [`~BlockRecordsRetriever.save_pretrained`] keeps the records without pickle, and
    [`RealmRetriever.from_pretrained`] loads them back.

    Args:
        block_records (`np.ndarray` or list of `bytes` / `str`): The blocks, as UTF-8 bytes or strings.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): The tokenizer of the reader.

    Example:

    ```python
    >>> records = np.array([b"This is the first record", b"This is the second record"], dtype=object)
    >>> retriever = RealmRetriever(records, tokenizer)
    >>> answer_ids = tokenizer(["the second"], add_special_tokens=False).input_ids
    >>> question_ids = tokenizer(["Test question"]).input_ids
    >>> has_answers, start_pos, end_pos, concat_inputs = retriever(
    ...     np.array([0, 1]), question_ids, answer_ids=answer_ids, max_length=32, return_tensors="np"
    ... )
    >>> has_answers
    [False, True]
    ```
    """

    def __init__(
        self,
        block_records: np.ndarray | Sequence[bytes | str] | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        index: RealmIndex | None = None,
    ):
        if index is not None:
            raise TypeError("Pass either an index or block_records, not both.")
        if block_records is None:
            raise TypeError("BlockRecordsRetriever needs the block records (`block_records=`).")
        if tokenizer is None:
            raise TypeError("RealmRetriever needs the tokenizer of the corpus (`tokenizer=`).")
        #: The blocks as given (the transformers-4 attribute).
        self.block_records = block_records
        self.index = None
        self._set_corpus(legacy_corpus(block_records, tokenizer), tokenizer)

    def __call__(self, *args, **kwargs) -> tuple:
        """The transformers-4 call: [`~RealmRetriever.encode_retrieved`]."""
        return self.encode_retrieved(*args, **kwargs)

    def retrieve(self, *args, **kwargs):
        raise TypeError(_RECORDS_ONLY)

    def retrieve_for_pretraining(self, *args, **kwargs):
        raise TypeError(_RECORDS_ONLY)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Saves the tokenizer files and the block records (`block_records/`, an Arrow dataset: no pickle)."""
        os.makedirs(save_directory, exist_ok=True)
        self.tokenizer.save_pretrained(save_directory)
        save_block_records(self.block_records, save_directory)


#: The files a saved retriever adds to a model directory or repository (what `load_retriever_for` downloads).
RETRIEVER_FILES = (f"{INDEX_SUBFOLDER}/*", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "added_tokens.json")  # fmt: skip


def load_retriever_for(
    model: torch.nn.Module,
    pretrained_name_or_path: str | os.PathLike,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    allow_pickle: bool = False,
    allow_stale_index: bool = False,
    mmap: bool = True,
    **hub_kwargs,
) -> RealmRetriever | None:
    r"""
    The retriever saved with a model: the `index/` folder and tokenizer files of its local directory or Hub repository
    (only those are downloaded), as `model.save_pretrained`, `push_to_hub` and `realm_hf.save_realm` write them; or a
    legacy checkpoint's `block_records.npy` with the `block_emb` of its weights (read only with `allow_pickle=True`).

    For a model with a document tower that trains ([`RealmForPreTraining`]) the index must be the one that tower
    builds: another tower's index (a different embedder fingerprint) is refused, or with `allow_stale_index=True`
    loaded with a warning.

    Args:
        model (`torch.nn.Module`): The model the retriever is for.
        pretrained_name_or_path (`str` or `os.PathLike`): The model's directory or Hub repository id.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): The tokenizer of the corpus (default: the one saved there).
        allow_pickle, allow_stale_index, mmap: See above; `mmap` memory-maps the index files.
        hub_kwargs: `revision`, `token`, `cache_dir`, `local_files_only`.

    Returns:
        [`RealmRetriever`], or `None` when there is no index there (or only a legacy one and `allow_pickle` is not
        set, or no tokenizer: both with a warning).
    """
    # A legacy block_records.npy (gigabytes for the published checkpoints) is fetched only when it may be read.
    patterns = [*RETRIEVER_FILES, *([LEGACY_BLOCK_RECORDS_NAME] if allow_pickle else [])]
    directory = resolve_directory(pretrained_name_or_path, allow_patterns=patterns, **hub_kwargs)
    if tokenizer is None and any((directory / name).is_file() for name in ("tokenizer_config.json", "vocab.txt")):
        tokenizer = AutoTokenizer.from_pretrained(directory)
    has_index = is_saved_index(directory / INDEX_SUBFOLDER) or (directory / LEGACY_BLOCK_RECORDS_NAME).is_file()
    if has_index and tokenizer is None:
        logger.warning(f"{pretrained_name_or_path} has an index but no tokenizer files: no retriever is created.")
        return None
    try:
        index = load_index_in(directory, tokenizer, allow_pickle=allow_pickle, mmap=mmap)
    except PickleNotAllowedError as err:
        logger.warning(f"{err} The model has no retriever.")
        return None
    if index is None:
        return None
    if hasattr(model, "query_embedder"):  # a document tower that trains: the index must be its own
        index.require_embedder(model.embedder, f"The index of {pretrained_name_or_path}", allow_stale_index)
    logger.info(f"Loaded the knowledge index of {pretrained_name_or_path} ({len(index)} blocks).")
    return RealmRetriever(index, tokenizer)


def _block_records_call(args: tuple, kwargs: dict) -> bool:
    """Whether `RealmRetriever(*args, **kwargs)` is the transformers-4 call, with block records."""
    return kwargs.get("block_records") is not None or bool(args and isinstance(args[0], (np.ndarray, list, tuple)))


def load_index_in(
    directory: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None,
    allow_pickle: bool = False,
    mmap: bool = True,
) -> RealmIndex | None:
    r"""
    The knowledge index of a saved directory: its `index/` folder, or else its legacy `block_records.npy` with the
    block embeddings of its weights (read only with `allow_pickle=True`, tokenized with `tokenizer`).

    Returns:
        [`RealmIndex`], or `None` when the directory holds neither.

    Raises:
        [`PickleNotAllowedError`]: if there is only a legacy index and `allow_pickle` is not set.
        `ValueError`: if there is only a legacy index and no `tokenizer` to tokenize its blocks.
    """

    directory = Path(directory)
    if is_saved_index(directory / INDEX_SUBFOLDER):
        return load_index(directory / INDEX_SUBFOLDER, mmap=mmap)
    block_records = directory / LEGACY_BLOCK_RECORDS_NAME
    if not block_records.is_file():
        return None
    if not allow_pickle:
        raise PickleNotAllowedError(
            f"{directory} holds a legacy {LEGACY_BLOCK_RECORDS_NAME}, a pickled numpy array: unpickling can execute "
            "arbitrary code, so the knowledge index was not loaded. If you trust the file, pass `allow_pickle=True` "
            "to build the index from it, or convert the checkpoint once with `realm-hf convert` "
            "(realm_hf.hub.convert.convert_legacy_checkpoint) into the pickle-free layout."
        )
    if tokenizer is None:
        raise ValueError(f"{directory} has a {LEGACY_BLOCK_RECORDS_NAME} but no tokenizer to tokenize its blocks.")

    try:
        block_emb = load_legacy_block_emb(directory)
    except FileNotFoundError:
        return None  # block records without weights: no index (a transformers-4 retriever's own save)
    return RealmIndex.from_legacy(block_records, block_emb, tokenizer, allow_pickle=True, show_progress=False)


def _as_numpy(embeddings: torch.Tensor | np.ndarray) -> np.ndarray:
    if torch.is_tensor(embeddings):
        return embeddings.detach().float().cpu().numpy()
    return np.asarray(embeddings, dtype=np.float32)
