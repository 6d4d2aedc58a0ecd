"""Tokenizers of REALM: BERT WordPiece tokenizers with `batch_encode_candidates`.

The published `google/realm-*` repositories ship only `vocab.txt` and a `tokenizer_config.json` naming
`RealmTokenizer`; both classes below load them. `RealmTokenizerFast` is backed by the `tokenizers` library,
`RealmTokenizer` is the pure-Python implementation.
"""

import os

from transformers import BatchEncoding
from transformers.models.bert.tokenization_bert import BertTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
from transformers.utils import PaddingStrategy

from .file_utils import atomic_write_text


VOCAB_FILE_NAME = "vocab.txt"


class _CandidateEncodingMixin:
    """Adds `batch_encode_candidates` to a BERT tokenizer."""

    def batch_encode_candidates(self, text, **kwargs) -> BatchEncoding:
        r"""
        Encodes a batch of candidate lists, padding every candidate to `max_length`, for [`RealmScorer`] and
        [`RealmKnowledgeAugEncoder`].

        Args:
            text (`list[list[str]]`):
                For each example, its candidate texts. Every example must have the same number of candidates.
            text_pair (`list[list[str]]`, *optional*):
                Second segments, in the same nested layout as `text`.
            max_length (`int`):
                Length every candidate is padded to; required.
            return_tensors (`str`, *optional*):
                `"pt"`, `"np"` or `None` (lists).
            **kwargs:
                Passed to `__call__` for every example (for example `truncation=True`).

        Returns:
            [`~transformers.BatchEncoding`] whose `input_ids`, `attention_mask` and `token_type_ids` have shape
            `(batch_size, num_candidates, max_length)`.

        Example:

        ```python
        >>> batch = tokenizer.batch_encode_candidates(
        ...     [["Hello world!", "Nice to meet you!"], ["The cute cat.", "The adorable dog."]],
        ...     max_length=10,
        ...     return_tensors="pt",
        ... )
        >>> batch.input_ids.shape
        torch.Size([2, 2, 10])
        ```
        """
        if kwargs.get("max_length") is None:
            raise ValueError("batch_encode_candidates pads every candidate to `max_length`, which must be given.")
        kwargs["padding"] = PaddingStrategy.MAX_LENGTH
        kwargs.setdefault("return_token_type_ids", True)
        kwargs.setdefault("return_attention_mask", True)
        batch_text_pair = kwargs.pop("text_pair", None)
        return_tensors = kwargs.pop("return_tensors", None)
        if batch_text_pair is not None and len(batch_text_pair) != len(text):
            raise ValueError(
                f"batch_encode_candidates: `text` has {len(text)} examples but `text_pair` has {len(batch_text_pair)}."
            )
        counts = {len(candidates) for candidates in text}
        if len(counts) > 1:
            raise ValueError(
                f"batch_encode_candidates: every example must have the same number of candidates, got {sorted(counts)}."
            )
        output = {"input_ids": [], "attention_mask": [], "token_type_ids": []}
        for idx, candidate_text in enumerate(text):
            candidate_pair = batch_text_pair[idx] if batch_text_pair is not None else None
            encoded = super().__call__(candidate_text, candidate_pair, return_tensors=None, **kwargs)
            for key in output:
                if key in encoded:
                    output[key].append(encoded[key])
            lengths = {len(ids) for ids in encoded["input_ids"]}
            if lengths != {kwargs["max_length"]}:
                raise ValueError(
                    f"batch_encode_candidates: a candidate of example {idx} is longer than max_length="
                    f"{kwargs['max_length']}; pass truncation=True or a larger max_length."
                )
        output = {key: value for key, value in output.items() if len(value) > 0}
        return BatchEncoding(output, tensor_type=return_tensors)


class RealmTokenizerFast(_CandidateEncodingMixin, BertTokenizer):
    r"""
    REALM tokenizer backed by the `tokenizers` library: BERT WordPiece (`[CLS] A [SEP] B [SEP]`, token types 0/1)
    plus [`~RealmTokenizerFast.batch_encode_candidates`]. See [`~transformers.BertTokenizer`] for the arguments.

    Besides `vocab` (a dict or a path), a `vocab_file` (a BERT `vocab.txt`, one token per line) is read when `vocab` is
    not given, as transformers 4 tokenizers accepted it (transformers 5's BERT tokenizer would otherwise silently
    build a five-token vocabulary).
    """

    def __init__(self, vocab: str | dict[str, int] | None = None, vocab_file: str | None = None, **kwargs):
        if vocab is None and vocab_file is not None:
            vocab = _read_vocab_file(vocab_file)
        if vocab is None and kwargs.get("tokenizer_object") is None:
            where = kwargs.get("name_or_path")
            raise ValueError(
                "RealmTokenizerFast needs a vocabulary (`vocab`, a `vocab_file` such as BERT's vocab.txt, or a "
                "`tokenizer_object`)"
                + (f": no vocab.txt or tokenizer.json was found in {where!r}." if where else "; none was given.")
            )
        super().__init__(vocab=vocab, vocab_file=vocab_file, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs) -> tuple[str, ...]:
        """Saves `tokenizer.json` and the rest as every fast tokenizer does, and BERT's `vocab.txt` too, so that
        [`RealmTokenizer`] (and transformers 4 code) can load the directory."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        vocab = self.backend_tokenizer.get_vocab(with_added_tokens=False)
        path = os.path.join(save_directory, VOCAB_FILE_NAME)
        atomic_write_text(path, "".join(token + "\n" for token, _ in sorted(vocab.items(), key=lambda item: item[1])))
        return (*files, path)


def _read_vocab_file(path: str) -> dict[str, int]:
    """Token -> id of a BERT `vocab.txt` (one token per line, ids in line order)."""
    with open(path, encoding="utf-8") as handle:
        tokens = [line.rstrip("\n") for line in handle]
    if not tokens:
        raise ValueError(f"The vocabulary file {path} is empty.")
    return {token: index for index, token in enumerate(tokens)}  # as BERT's load_vocab: the line number


class RealmTokenizer(_CandidateEncodingMixin, BertTokenizerLegacy):
    r"""
    Pure-Python REALM tokenizer: BERT WordPiece plus [`~RealmTokenizer.batch_encode_candidates`]. See
    [`~transformers.models.bert.tokenization_bert_legacy.BertTokenizerLegacy`] for the arguments.
    """

    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
