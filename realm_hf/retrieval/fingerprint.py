"""Which embedder built an index: a hash of its weights and of the configuration fields that change its output.

An index stores the fingerprint of the document embedder that produced its embeddings
(`RealmIndexConfig.embedder_fingerprint`); [`RealmIndex.check_embedder`] compares it with a model, so a stale index
(the embedder trained since) is detected instead of silently retrieving with mismatched vectors.
"""

from __future__ import annotations

import hashlib

import torch


#: Configuration fields of a REALM embedder that change its embeddings for the same weights.
_EMBEDDING_CONFIG_FIELDS = ("embedder_pooling", "embedder_single_segment")


def compute_embedder_fingerprint(model: torch.nn.Module, chunk_numel: int = 1 << 24) -> str:
    """Hash the weights of the model that embeds the blocks, to detect a stale index.

    The SHA-256 covers the sorted `state_dict` names, shapes, dtypes and raw values, and the configuration fields
    that change how a REALM embedder reads the same weights (`embedder_pooling`, `embedder_single_segment`). Tensors
    are streamed in chunks of `chunk_numel` elements (moved to CPU one chunk at a time), so no large concatenation
    is made.

    Args:
        model (`torch.nn.Module`):
            The document embedder (for example `RealmEmbedder`).
        chunk_numel (`int`, *optional*, defaults to 2**24):
            Elements per hashed chunk.

    Returns:
        `str`: `"sha256:<hex digest>"`.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"Expected a torch.nn.Module, got {type(model).__name__}.")
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    for field in _EMBEDDING_CONFIG_FIELDS:
        if hasattr(config, field):
            digest.update(f"config.{field}={getattr(config, field)!r}\n".encode())
    for name, tensor in sorted(model.state_dict().items()):
        if tensor.device.type == "meta":
            raise ValueError(f"Cannot fingerprint {name!r}: it is on the meta device (no values).")
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        flat = tensor.detach().reshape(-1)
        for start in range(0, flat.numel(), chunk_numel):
            chunk = flat[start : start + chunk_numel].cpu().contiguous()
            digest.update(chunk.view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"
