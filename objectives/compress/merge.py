"""Per-layer linear merging, task arithmetic and TIES of checkpoints of one architecture."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

StateDict = Mapping[str, torch.Tensor]
MergeMethod = Literal["linear", "ties"]
LINEAR: MergeMethod = "linear"
TIES: MergeMethod = "ties"


@dataclass(frozen=True)
class MergeSettings:
    """How a trial's coefficients combine the checkpoints.

    Args:
        method: ``linear`` (task arithmetic) or ``ties`` (trim, elect sign, disjoint sum).
        density: TIES only: the share of each task vector's entries kept (largest magnitude,
            per tensor) before the sign election; 1 keeps all.
    """

    method: MergeMethod = LINEAR
    density: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in (LINEAR, TIES):
            raise ValueError(f"unknown merge method {self.method!r}; choose from {[LINEAR, TIES]}")
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"TIES density {self.density} must lie in (0, 1]")


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


def trimmed(delta: torch.Tensor, density: float) -> torch.Tensor:
    """``delta`` with all but its ``density`` share of largest-magnitude entries set to zero."""
    if density >= 1.0 or delta.numel() == 0:
        return delta
    keep = max(1, int(round(density * delta.numel())))
    threshold = delta.abs().flatten().kthvalue(delta.numel() - keep + 1).values
    return torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))


def ties_tensors(base: torch.Tensor, others: Sequence[torch.Tensor], coeffs: Sequence[float],
                 density: float = 1.0) -> torch.Tensor:
    """TIES-merging (Yadav et al. 2023) with per-checkpoint coefficients.

    Each task vector ``tau_k = other_k - base`` is trimmed to its ``density`` share of
    largest entries; each entry's sign is elected as the sign of ``sum_k c_k * tau_k``
    (trimmed); the merge is ``base + sum_k c_k * tau_k`` over the checkpoints whose entry
    agrees with the elected sign (the others contribute nothing to that entry). All-zero
    coefficients give ``base`` exactly.
    """
    if len(others) != len(coeffs):
        raise ValueError(f"{len(others)} checkpoints but {len(coeffs)} coefficients")
    if not any(float(c) for c in coeffs):
        return base.clone()
    deltas = [trimmed(other - base, density) * float(c) for other, c in zip(others, coeffs)]
    elected = torch.sign(torch.stack(deltas).sum(0))
    merged = base.clone()
    for delta in deltas:
        merged = merged + torch.where(torch.sign(delta) == elected, delta, torch.zeros_like(delta))
    return merged


def _mean(rows: Sequence[Sequence[float]]) -> list[float]:
    return [sum(r[k] for r in rows) / len(rows) for k in range(len(rows[0]))]


def leftover_coeffs(layer: str, layer_coeffs: Mapping[str, Sequence[float]], n: int) -> Sequence[float]:
    """The coefficients of a layer that has none of its own (a norm): the mean over the
    knobbed layers beside it (direct children of its parent module), else over those
    anywhere under its parent, going up until some are found; zeros when none is knobbed.

    So a decoder block's norms follow their block (``model.layers.3.input_layernorm``: the
    block's projections) and a Llama's final norm the embedding beside it
    (``model.norm``: ``model.embed_tokens``, tied to the LM head the norm feeds).
    """
    parts = layer.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:depth]) + "." if depth else ""
        under = {name: c for name, c in layer_coeffs.items() if name.startswith(prefix)}
        beside = [c for name, c in under.items() if "." not in name[len(prefix):]]
        if beside or under:
            return _mean(beside or list(under.values()))
    return [0.0] * n


def merge_state_dicts(
    base: StateDict,
    checkpoints: Sequence[StateDict],
    layer_coeffs: Mapping[str, Sequence[float]],
    settings: MergeSettings = MergeSettings(),
) -> dict[str, torch.Tensor]:
    """Merge every floating-point entry of the state dicts.

    An entry ``"<layer>.<param>"`` takes its layer's coefficients. Entries of layers without
    coefficients (norms, unknobbed layers) take those of the knobbed layers
    beside them (:func:`leftover_coeffs`).
    """
    if not checkpoints:
        raise ValueError("merging needs at least one checkpoint besides the base")
    leftovers: dict[str, Sequence[float]] = {}
    merged: dict[str, torch.Tensor] = {}
    for key, tensor in base.items():
        if not tensor.is_floating_point():
            merged[key] = tensor.clone()
            continue
        layer = key.rsplit(".", 1)[0]
        coeffs = layer_coeffs.get(layer)
        if coeffs is None:
            if layer not in leftovers:
                leftovers[layer] = leftover_coeffs(layer, layer_coeffs, len(checkpoints))
            coeffs = leftovers[layer]
        others = [ckpt[key] for ckpt in checkpoints]
        if settings.method == TIES:
            merged[key] = ties_tensors(tensor, others, coeffs, settings.density)
        else:
            merged[key] = merge_tensors(tensor, others, coeffs)
    return merged
