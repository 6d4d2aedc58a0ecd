"""The fast paths of the retriever and the reader give what their straightforward versions give."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from realm_hf import RealmReader
from realm_hf.modeling_realm import _mask_to_score
from realm_hf.retrieval.formats import longest_first_lengths_array


def longest_first_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """The straightforward version: lengths two segments keep under the `tokenizers` library's longest-first pair truncation.

    Args:
        len_a, len_b: Lengths of the first and second segment (without special tokens).
        budget: Tokens available for both segments (`max_length` minus the special tokens).
    """
    if len_a + len_b <= budget:
        return len_a, len_b
    n1, n2, swap = len_a, len_b, False
    if n1 > n2:  # n1 is the shorter segment
        n1, n2, swap = n2, n1, True
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    if swap:
        n1, n2 = n2, n1
    return min(n1, len_a), min(n2, len_b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), min_size=1, max_size=20), st.integers(1, 400))
def test_longest_first_lengths_array_matches_the_scalar_version(pairs, budget):
    len_a = np.array([a for a, _ in pairs])
    len_b = np.array([b for _, b in pairs])
    kept = longest_first_lengths_array(len_a, len_b, budget)
    assert kept.shape == (len(pairs), 2)
    assert [tuple(row) for row in kept.tolist()] == [longest_first_lengths(a, b, budget) for a, b in pairs]


def test_longest_first_lengths_array_broadcasts_questions_over_blocks():
    questions = np.array([[3], [300]])
    blocks = np.array([[10, 317], [5, 400]])
    kept = longest_first_lengths_array(questions, blocks, 317)
    assert kept.shape == (2, 2, 2)
    assert kept[0, 0].tolist() == [3, 10]
    assert kept[0, 1].tolist() == list(longest_first_lengths(3, 317, 317))
    assert kept[1, 1].tolist() == list(longest_first_lengths(300, 400, 317))


def _reader_inputs(config, batch_size=3, rows=4, seq_len=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, seq_len + 1, (batch_size, rows), generator=g)
    lengths[0, 0] = seq_len
    positions = torch.arange(seq_len)
    attention_mask = (positions < lengths[..., None]).long()
    input_ids = torch.randint(5, config.vocab_size, (batch_size, rows, seq_len), generator=g) * attention_mask
    token_type_ids = ((positions >= 4) & attention_mask.bool()).long()
    block_mask = (positions >= 4) & (positions < lengths[..., None] - 1)
    relevance_score = torch.randn(batch_size, rows + 2, generator=g)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "block_mask": block_mask,
        "relevance_score": relevance_score,
    }


def test_reader_rows_trimmed_by_length_give_the_untrimmed_outputs(tiny_config):
    torch.manual_seed(0)
    reader = RealmReader(tiny_config).eval()
    inputs = _reader_inputs(tiny_config)
    trimmed = reader(**inputs)
    untrimmed = reader(**inputs, output_hidden_states=True)  # the trunk then runs once over the padded rows
    assert untrimmed.hidden_states is not None and trimmed.hidden_states is None
    torch.testing.assert_close(trimmed.logits, untrimmed.logits, atol=1e-5, rtol=0)
    assert torch.equal(trimmed.block_idx, untrimmed.block_idx) and torch.equal(trimmed.start_pos, untrimmed.start_pos)


def _plain_span_logits(head, hidden, block_mask):
    """The span MLP of the original implementation over every span, then the evidence mask added."""
    starts, ends = head.span_candidates(hidden.size(1), hidden.device)
    start_projection, end_projection = head.dense_intermediate(hidden).chunk(2, dim=-1)
    span_hidden = start_projection.index_select(1, starts) + end_projection.index_select(1, ends)
    logits = head.dense_output(head.layer_normalization(head.relu(span_hidden))).squeeze(-1)
    span_mask = block_mask.index_select(-1, starts) & block_mask.index_select(-1, ends)
    return logits + _mask_to_score(span_mask, logits.dtype), span_mask


def test_span_logits_of_the_evidence_spans_only_match_the_full_computation(tiny_config):
    torch.manual_seed(0)
    reader = RealmReader(tiny_config).eval()
    head = reader.qa_outputs
    inputs = _reader_inputs(tiny_config)
    rows = inputs["input_ids"].flatten(0, 1)
    hidden = torch.randn(rows.size(0), rows.size(1), tiny_config.hidden_size)
    block_mask = inputs["block_mask"].flatten(0, 1)
    logits, _, _ = head(hidden, block_mask)
    expected, span_mask = _plain_span_logits(head, hidden, block_mask)
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)
    assert torch.equal(logits[~span_mask], expected[~span_mask])  # both exactly the dtype's minimum


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=14, max_size=14), min_size=1, max_size=5), st.integers(0, 2**16))
def test_span_scorer_matches_the_plain_mlp_for_any_evidence_mask(mask_rows, seed):
    """Holes in the evidence, rows without evidence, evidence at either end: same logits and gradients."""
    from realm_hf import RealmConfig
    from realm_hf.modeling_realm import RealmReaderProjection

    config = RealmConfig(hidden_size=16, span_hidden_size=12, max_span_width=4, num_attention_heads=2)
    torch.manual_seed(seed)
    head = RealmReaderProjection(config)
    with torch.no_grad():  # non-trivial layer-norm parameters, so that folding them is exercised
        head.layer_normalization.weight.normal_()
        head.layer_normalization.bias.normal_()
    block_mask = torch.tensor(mask_rows)
    hidden = torch.randn(*block_mask.shape, config.hidden_size, requires_grad=True)

    logits, _, _ = head(hidden, block_mask)
    expected, span_mask = _plain_span_logits(head, hidden, block_mask)
    assert torch.equal(logits > torch.finfo(logits.dtype).min, span_mask)
    torch.testing.assert_close(logits[span_mask], expected[span_mask], atol=1e-5, rtol=1e-5)
    if not span_mask.any():
        return
    weights = torch.randn(int(span_mask.sum()))
    grads = []
    for out in (logits, expected):
        head.zero_grad()
        hidden.grad = None
        (out[span_mask] * weights).sum().backward(retain_graph=True)
        grads.append([hidden.grad.clone()] + [p.grad.clone() for p in head.parameters()])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_span_scorer_in_bfloat16_stays_close_to_float32(tiny_config):
    """The folded layer norm is computed in float32 whatever the model's dtype, so bfloat16 only rounds."""
    torch.manual_seed(0)
    reader = RealmReader(tiny_config).eval()
    head = reader.qa_outputs
    inputs = _reader_inputs(tiny_config)
    hidden = torch.randn(12, 20, tiny_config.hidden_size)
    block_mask = inputs["block_mask"].flatten(0, 1)
    expected, span_mask = _plain_span_logits(head, hidden, block_mask)
    logits, _, _ = head.to(torch.bfloat16)(hidden.bfloat16(), block_mask)
    assert logits.dtype == torch.bfloat16
    assert torch.equal(logits > torch.finfo(logits.dtype).min, span_mask)
    scale = expected[span_mask].abs().max()
    assert (logits[span_mask].float() - expected[span_mask]).abs().max() < 0.05 * scale
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_logits, _, _ = head.float()(hidden, block_mask)
    assert (autocast_logits[span_mask].float() - expected[span_mask]).abs().max() < 0.05 * scale
