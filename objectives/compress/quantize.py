"""Per-output-channel symmetric weight quantization by round-to-nearest.

The weights are quantized and de-quantized in place ("fake quantization"): the model keeps
running in floating point with exactly the values a packed low-bit model would hold. The
packed size is accounted by :mod:`paretoml.objectives.measure`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from paretoml.search_space.introspect import layer_weight


def quantize_tensor(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``weight`` to ``bits`` per value with one scale per output channel (row).

    ``bits == 16`` rounds to fp16; 2..8 use the symmetric grid ``[-(2^(b-1)-1), 2^(b-1)-1]``
    with ``scale = max|w_row| / (2^(b-1)-1)``, so zeros stay zeros and pruning survives.
    """
    if bits == 16:
        return weight.to(torch.float16).to(weight.dtype)
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be 2..8 or 16, got {bits}")
    levels = 2 ** (bits - 1) - 1
    rows = weight.reshape(weight.shape[0], -1)
    scale = rows.abs().amax(dim=1, keepdim=True) / levels
    # fp16 scales, as stored in the packed format
    scale = scale.to(torch.float16).to(weight.dtype)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(rows / safe), -levels, levels)
    return (q * safe).reshape(weight.shape)


@torch.no_grad()
def quantize_model(model: nn.Module, bits: Mapping[str, int]) -> nn.Module:
    """Quantize the weights of the named layers of ``model`` in place; returns the model."""
    for name, b in bits.items():
        weight = layer_weight(model, name)  # a module's weight, or a recurrent weight matrix
        weight.copy_(quantize_tensor(weight, b))
    return model
