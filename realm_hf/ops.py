"""Performance kernels of the REALM models, in plain PyTorch.

They compute exactly what the original implementation's modules compute (up to float rounding), in a cheaper order;
[`modeling_realm`] keeps the modules and their parameter names, and calls these. The measurements are in
`benchmarks/README.md` (`bench_finetune_step.py`, `bench_gelu.py`).
"""

import math

import torch
from torch import nn
from transformers.activations import GELUTanh, NewGELUActivation


#: Start tokens per pass of the span MLP: 2.6 MB of activations at 10 widths x 256 in float32.
SPAN_CHUNK = 256


def evidence_span_logits(
    hidden_states: torch.Tensor,
    block_mask: torch.Tensor,
    dense_intermediate: nn.Linear,
    layer_norm: nn.LayerNorm,
    dense_output: nn.Linear,
    max_width: int,
    num_spans: int,
) -> torch.Tensor:
    """Span logits of the reader's span MLP, `dense_output(layer_norm(relu(start_t + end_{t+w-1})))`, where
    `start, end = dense_intermediate(hidden_states).chunk(2)`, for every span of width 1..`max_width`.

    Spans are enumerated width-major (as `RealmReaderProjection.span_candidates`); spans with an endpoint outside the
    evidence block get the dtype's minimum. The computation order is what makes it cheap:

    * only the tokens from the first to the last evidence token of each row are projected (the other spans would get
      the dtype's minimum added, which absorbs any logit), so question tokens and padding cost nothing;
    * those tokens are packed one row after the other, and the spans of width `w` pair the start projection of packed
      token `t` with the end projection of token `t + w - 1`: contiguous windows, no gather;
    * the layer norm and the output layer are folded into three statistics per span:
      `dense_output(layer_norm(x)) = (x.g - mean(x) sum(g)) / std(x) + c`, with `g = gamma * w` and `c = beta.w + b`,
      computed in float32, so no normalised `[spans, span_hidden_size]` tensor is written.

    Start tokens go through in chunks of `SPAN_CHUNK`, all widths at once, from the projection on, so that their
    activations stay in the CPU cache (the projections of `max_width - 1` tokens are computed twice).

    Args:
        hidden_states (`torch.FloatTensor` of shape `(rows, seq_len, hidden_size)`):
            The reader's last hidden states.
        block_mask (`torch.Tensor` of shape `(rows, seq_len)`):
            1 on evidence tokens.
        dense_intermediate, layer_norm, dense_output:
            The span MLP's layers.
        max_width (`int`):
            The widest span, at most `seq_len`.
        num_spans (`int`):
            The number of candidate spans of a row.

    Returns:
        `torch.FloatTensor` of shape `(rows, num_spans)`.
    """
    seq_len = hidden_states.size(1)
    rows, positions, is_evidence = _evidence_range_tokens(block_mask.bool())
    if rows.numel() == 0:  # no evidence anywhere: no candidate span
        return hidden_states.new_full((hidden_states.size(0), num_spans), torch.finfo(hidden_states.dtype).min)
    # Spans starting at packed token t end at tokens t .. t + max_width - 1: pad with max_width - 1 rows.
    pad = max_width - 1
    tokens = nn.functional.pad(hidden_states[rows, positions], (0, 0, 0, pad))
    num_tokens = rows.numel()
    folded = _folded_output_layer(layer_norm, dense_output)
    pieces = []
    for first in range(0, num_tokens, SPAN_CHUNK):
        count = min(SPAN_CHUNK, num_tokens - first)
        start_projection, end_projection = dense_intermediate(tokens[first : first + count + pad]).chunk(2, dim=-1)
        # [count, max_width, span_hidden_size]: entry (t, k) is the end projection of token first + t + k
        ends_by_width = end_projection.unfold(0, max_width, 1).transpose(1, 2)
        span_hidden = (start_projection[:count].unsqueeze(1) + ends_by_width).relu_()
        pieces.append(_span_scores(span_hidden, layer_norm.eps, *folded))
    scores = torch.cat(pieces)
    # Span (t, t + k) is a candidate when both ends lie in the same row's evidence block.
    end_rows = torch.cat([rows, rows.new_full((pad,), -1)]).unfold(0, max_width, 1)
    end_is_evidence = torch.cat([is_evidence, is_evidence.new_zeros(pad)]).unfold(0, max_width, 1)
    token, width_index = ((end_rows == rows[:, None]) & is_evidence[:, None] & end_is_evidence).nonzero(as_tuple=True)
    widths = torch.arange(1, max_width, device=hidden_states.device)
    spans_before_width = torch.cat([widths.new_zeros(1), (seq_len - widths + 1).cumsum(0)])
    span_logits = scores[token, width_index]
    logits = span_logits.new_full((hidden_states.size(0), num_spans), torch.finfo(span_logits.dtype).min)
    return logits.index_put((rows[token], spans_before_width[width_index] + positions[token]), span_logits)


def _evidence_range_tokens(block_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row, position and evidence flag of every token from the first to the last evidence token of each row of
    `block_mask` (`[rows, seq_len]` booleans), row after row."""
    positions = torch.arange(block_mask.size(-1), device=block_mask.device)
    first = torch.where(block_mask, positions, block_mask.size(-1)).amin(-1, keepdim=True)
    last = torch.where(block_mask, positions, -1).amax(-1, keepdim=True)
    rows, positions = ((positions >= first) & (positions <= last)).nonzero(as_tuple=True)
    return rows, positions, block_mask[rows, positions]


def _folded_output_layer(
    layer_norm: nn.LayerNorm, dense_output: nn.Linear
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(g, sum(g), c)` in float32, with `g = gamma * w` and `c = beta.w + b`: the layer norm's affine part folded into
    the output layer."""
    weight = dense_output.weight[0].float()
    gain = layer_norm.weight.float() * weight
    shift = layer_norm.bias.float() @ weight + dense_output.bias.float()[0]
    return gain, gain.sum(), shift


def _span_scores(
    span_hidden: torch.Tensor, eps: float, gain: torch.Tensor, gain_sum: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """`dense_output(layer_norm(span_hidden))` over the last dimension, from the folded output layer, in float32."""
    size = span_hidden.size(-1)
    with torch.autocast(span_hidden.device.type, enabled=False):
        flat = span_hidden.reshape(-1, size).float()
        mean = flat.mean(-1)
        variance = (torch.linalg.vector_norm(flat, dim=-1).square() / size - mean.square()).clamp_min(0)
        scores = (flat @ gain - mean * gain_sum) * torch.rsqrt(variance + eps) + shift
    return scores.view(span_hidden.shape[:-1]).to(span_hidden.dtype)


class RealmGELUTanh(GELUTanh):
    """`gelu_new`, the tanh approximation of GELU, the activation of the REALM checkpoints.

    transformers writes `gelu_new` as five tensor operations ([`~transformers.activations.NewGELUActivation`]), each a
    pass over memory; this module is PyTorch's fused kernel (as [`~transformers.activations.GELUTanh`]), except for
    float32 CPU inputs that need no gradient. There it uses the identity `0.5 x (1 + tanh(y)) = x sigmoid(2 y)`, in
    place on one new tensor: PyTorch's CPU `tanh` is accurate to about 1 ulp and slow, its `sigmoid` is not, and the
    six passes take less time than the fused kernel on reader activations (`benchmarks/bench_gelu.py`). The results
    differ from the fused kernel by float rounding (about 5e-7).
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (
            input.device.type != "cpu"
            or input.dtype != torch.float32
            or (torch.is_grad_enabled() and input.requires_grad)
        ):
            return super().forward(input)
        scale = 2 * math.sqrt(2 / math.pi)
        output = input.square()
        # 2 y = scale (x + 0.044715 x^3) = (scale 0.044715 x^2 + scale) x
        output.mul_(scale * 0.044715).add_(scale).mul_(input).sigmoid_()
        return output.mul_(input)


def use_realm_gelu_tanh(model: nn.Module) -> None:
    """Replaces every `gelu_new` module ([`~transformers.activations.NewGELUActivation`]) with [`RealmGELUTanh`]."""
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, RealmGELUTanh())
