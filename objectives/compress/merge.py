"""Per-layer linear merging and task arithmetic of checkpoints of one architecture."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

StateDict = Mapping[str, torch.Tensor]


def merge_tensors(base: torch.Tensor, others: Sequence[torch.Tensor], coeffs: Sequence[float]) -> torch.Tensor:
    """``(1 - sum(c)) * base + sum(c_k * other_k)``.

    Written as a weighted sum rather than ``base + c * (other - base)`` so that the
    endpoints are exact: all-zero coefficients give ``base`` and a one-hot gives that
    checkpoint, bit for bit.
    """
    if len(others) != len(coeffs):
        raise ValueError(f"{len(others)} checkpoints but {len(coeffs)} coefficients")
    merged = base * (1.0 - float(sum(coeffs)))
    for other, c in zip(others, coeffs):
        merged = merged + other * float(c)
    return merged


def merge_state_dicts(
    base: StateDict,
    checkpoints: Sequence[StateDict],
    layer_coeffs: Mapping[str, Sequence[float]],
) -> dict[str, torch.Tensor]:
    """Merge every floating-point entry of the state dicts.

    An entry ``"<layer>.<param>"`` takes its layer's coefficients. Entries of layers without
    coefficients (norms, unknobbed layers) take the mean coefficients over all layers.
    """
    if not checkpoints:
        raise ValueError("merging needs at least one checkpoint besides the base")
    if layer_coeffs:
        n = len(checkpoints)
        fallback = [sum(c[k] for c in layer_coeffs.values()) / len(layer_coeffs) for k in range(n)]
    else:
        fallback = [0.0] * len(checkpoints)
    merged: dict[str, torch.Tensor] = {}
    for key, tensor in base.items():
        if not tensor.is_floating_point():
            merged[key] = tensor.clone()
            continue
        layer = key.rsplit(".", 1)[0]
        coeffs = layer_coeffs.get(layer, fallback)
        merged[key] = merge_tensors(tensor, [ckpt[key] for ckpt in checkpoints], coeffs)
    return merged
