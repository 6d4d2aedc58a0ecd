"""Optimizer parameter groups, shared by the pre-training loop and the fine-tuning scripts."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def parameter_groups(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float,
    learning_rates: Mapping[str, float] | None = None,
) -> list[dict]:
    r"""
    AdamW parameter groups as BERT is trained: no weight decay on biases and layer-norm weights, and a learning rate of
    its own for every parameter whose name starts with a prefix of `learning_rates`.

    Args:
        model (`torch.nn.Module`): Its parameters that require gradients are grouped; frozen ones are left out.
        learning_rate (`float`): Learning rate of the parameters no prefix matches.
        weight_decay (`float`): Weight decay of the matrices (parameters of 2 or more dimensions, layer norms aside).
        learning_rates (`Mapping[str, float]`, *optional*): Parameter-name prefix -> learning rate (for example
            `{"embedder.": 1e-5}`); the first matching prefix wins.

    Returns:
        `list[dict]`: `{"params", "lr", "weight_decay"}` groups, in the order their first parameter appears.
    """
    learning_rates = dict(learning_rates or {})
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        lr = next((lr for prefix, lr in learning_rates.items() if name.startswith(prefix)), learning_rate)
        groups.setdefault((lr, 0.0 if no_decay else weight_decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]


__all__ = ["parameter_groups"]
