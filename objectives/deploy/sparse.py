"""The 2:4 semi-structured pruning pattern: in every group of four consecutive weights along
a row, the two of smallest magnitude are zero. Sparse tensor cores (NVIDIA Ampere on) skip
them, at the cost of 2 bits of position metadata per kept value."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def semi_structured_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep-mask keeping the two largest-magnitude weights of every 4 along the last axis."""
    rows = weight.reshape(weight.shape[0], -1)
    if rows.shape[1] % 4:
        raise ValueError(f"2:4 sparsity needs a multiple of 4 inputs per row, got {rows.shape[1]}")
    groups = rows.detach().abs().reshape(rows.shape[0], -1, 4)
    # stable order: among ties the earlier position is dropped first
    order = torch.argsort(groups, dim=-1, stable=True)
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(-1, order[..., :2], False)
    return mask.reshape(weight.shape)


def is_semi_structured(weight: torch.Tensor) -> bool:
    """True when every group of 4 along each row holds at most 2 non-zeros."""
    rows = weight.reshape(weight.shape[0], -1)
    if rows.shape[1] % 4:
        return False
    return bool(((rows.reshape(rows.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


@torch.no_grad()
def prune_semi_structured(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Apply the 2:4 pattern in place to the named layers; returns their keep-masks."""
    modules = dict(model.named_modules())
    masks: dict[str, torch.Tensor] = {}
    for name in names:
        weight = modules[name].weight  # type: ignore[union-attr]
        mask = semi_structured_mask(weight)
        weight.mul_(mask)
        masks[name] = mask
    return masks


def semi_structured_layers(config: object) -> list[str]:
    """Layers a trial's config puts in the 2:4 pattern (prune method ``2:4``, ratio > 0)."""
    prune: dict[str, float] = getattr(config, "prune")
    method: dict[str, str] = getattr(config, "prune_method")
    return [name for name, ratio in prune.items() if method.get(name) == "2:4" and ratio > 0]
