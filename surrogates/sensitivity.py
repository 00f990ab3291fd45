"""Cheap per-layer sensitivity, and an ILP that turns it into good first trials.

Sensitivity of a layer at ``b`` bits is measured with only that layer quantized, and at
pruning ratio ``r`` with only that layer pruned (unstructured magnitude pruning): the drop
of the task's metric (accuracy, or fidelity when the task has no labels; a real model's
task ranks by its first metric, on its calibration split), and a forward-only proxy, the
MSE of the outputs against the uncompressed model on the example batch. That is ``layers x (bit choices + ratios)`` cheap evaluations, done once per study
by a worker.

Treating the errors as additive over layers, and within a layer over its quantization and
its pruning (Hubara et al.; HAWQ-V3), the best (bits, ratio) per layer under a byte budget
is a multiple-choice knapsack, solved exactly as an integer program with SciPy's HiGHS
(``scipy.optimize.milp``). Bytes need no such assumption: a layer's bytes depend on its own
weight alone, and are counted as the study's deployment counts them (the deployed kernel's
resident tensors in runtime mode, the packed file's in dequantize-at-load, where the zeros
that rounding to few bits makes are priced as the bitmap stores them), for every (bits,
ratio) the device offers the layer. So an allocation's bytes are the bytes its trial
measures. Allocations at several budgets become the study's first trials
(``warm_start: {method: sensitivity}`` in a spec).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from paretoml.objectives.evaluate import TrialEvaluator
from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.model_bytes import packed_weight_bytes
from paretoml.search_space.space import TrialConfig


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    #: bits -> drop of the task metric with only this layer at these bits
    drop: dict[int, float]
    #: bits -> MSE of the logits against the uncompressed model (forward-only proxy)
    proxy_mse: dict[int, float]
    #: unstructured pruning ratio -> drop of the task metric with only this layer pruned
    prune_drop: dict[float, float] = field(default_factory=dict)
    #: pruning ratio -> MSE of the logits against the uncompressed model
    prune_proxy_mse: dict[float, float] = field(default_factory=dict)
    #: (bits, ratio) -> this layer's bytes (weight, scales, bias) as the study deploys it
    weight_bytes: dict[tuple[int, float], int] = field(default_factory=dict)
    #: the task metric whose drop is measured
    metric: str = ""


def sensitivity_attr(sensitivities: Sequence[LayerSensitivity]) -> dict[str, Any]:
    """The stored form of ``sensitivities`` (JSON: bits as strings)."""
    metric = sensitivities[0].metric if sensitivities else ""
    return {"metric": metric, "drop": {s.layer: {str(b): float(d) for b, d in s.drop.items()} for s in sensitivities}}


def sensitivity_from_attr(raw: Any, reference: Mapping[str, float]) -> dict[str, dict[int, float]] | None:
    """Per layer, bits -> drop as a fraction of the uncompressed metric (so it carries across
    models); None when nothing (or nothing readable) is stored."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("drop"), Mapping):
        return None
    scale = abs(float(reference.get(str(raw.get("metric")), 1.0) or 1.0))
    try:
        return {str(layer): {int(b): float(d) / scale for b, d in drops.items()} for layer, drops in raw["drop"].items()}
    except (TypeError, ValueError, AttributeError):
        return None


class LayerChoice(NamedTuple):
    """What the allocator gives one layer."""

    bits: int
    prune: float = 0.0


def measure_sensitivity(
    evaluator: TrialEvaluator,
    layers: Sequence[str],
    choices: Sequence[int] | Mapping[str, Sequence[int]],
    prune_ratios: Sequence[float] = (),
    prune_layers: Sequence[str] | None = None,
) -> list[LayerSensitivity]:
    """Single-layer degradations: every bit choice of ``layers`` (one list for all, or per
    layer: the choices the study's device offers it), and every ratio of ``prune_ratios`` of
    the ``prune_layers`` among them (default: all of them). Bytes are the evaluator's own
    count for its deployment mode, all layers at once per (bits, ratio): layers own their
    tensors, so a layer's bytes do not depend on the others'."""
    offered = {layer: list(choices[layer] if isinstance(choices, Mapping) else choices) for layer in layers}
    metric = evaluator.primary_metric
    # a drop is a worsening: a metric to minimise (a perplexity ratio) worsens upwards
    sign = -1.0 if evaluator.catalog[metric].direction == "minimize" else 1.0
    split = evaluator.cheap_split
    base = evaluator.evaluate(TrialConfig(), [metric], split=split).values[metric]
    reference = evaluator.example_output(evaluator.model)

    def degradation(config: TrialConfig) -> tuple[float, float]:
        model, _ = evaluator.build(config)
        drop = sign * (base - evaluator.measure(model, config, [metric], split).values[metric])
        return drop, float(torch.mean((evaluator.example_output(model) - reference) ** 2).item())

    prunable = set(layers if prune_layers is None else prune_layers)
    result = []
    for layer in layers:
        drop: dict[int, float] = {}
        mse: dict[int, float] = {}
        for bits in offered[layer]:
            drop[bits], mse[bits] = degradation(TrialConfig(bits={layer: bits}))
        prune_drop: dict[float, float] = {}
        prune_mse: dict[float, float] = {}
        for ratio in prune_ratios if layer in prunable else ():
            if ratio > 0:
                prune_drop[ratio], prune_mse[ratio] = degradation(TrialConfig(prune={layer: ratio}))
        result.append(LayerSensitivity(layer, drop, mse, prune_drop, prune_mse, {}, metric))
    for (bits, ratio), sizes in _deployed_bytes(evaluator, offered, prunable, prune_ratios).items():
        for s in result:
            if s.layer in sizes:
                s.weight_bytes[bits, ratio] = sizes[s.layer]
    return result


def _deployed_bytes(evaluator: TrialEvaluator, offered: Mapping[str, Sequence[int]], prunable: set[str],
                    ratios: Sequence[float]) -> dict[tuple[int, float], dict[str, int]]:
    """(bits, ratio) -> layer -> its bytes with every layer that offers ``bits`` at them."""
    sizes: dict[tuple[int, float], dict[str, int]] = {}
    for bits in sorted({b for values in offered.values() for b in values}):
        for ratio in (0.0, *(r for r in ratios if r > 0)):
            at = [layer for layer, values in offered.items() if bits in values and (not ratio or layer in prunable)]
            if at:
                config = TrialConfig(bits={layer: bits for layer in at},
                                     prune={layer: ratio for layer in at} if ratio else {})
                sizes[bits, ratio] = evaluator.layer_bytes(config, at)
    return sizes


def prune_grid(low: float, high: float, step: float | None = None) -> list[float]:
    """The ratios whose sensitivity is measured for an unstructured prune knob: its range's
    ends and the usual steps between them, on the knob's step grid when it has one."""
    ratios = {low, high, *(r for r in (0.25, 0.5, 0.7, 0.85) if low < r < high)}
    if step:
        ratios = {min(high, low + round((r - low) / step) * step) for r in ratios}
    return sorted(round(r, 6) for r in ratios if r > 0)


def allocate(
    sensitivities: Sequence[LayerSensitivity],
    layers: Sequence[LayerInfo],
    budget_bytes: float,
    use_proxy: bool = True,
    prune: bool = True,
) -> dict[str, LayerChoice] | None:
    """(bits, pruning ratio) per layer minimising the summed degradation with weight bytes
    <= ``budget_bytes``; ratios only where they were measured (and ``prune``).

    Returns None when even the smallest choice everywhere exceeds the budget. Ties in the
    drop (common for a measured accuracy on a small split) are broken by the proxy MSE.
    """
    info = {layer.name: layer for layer in layers}
    options: list[tuple[str, LayerChoice]] = []
    cost: list[float] = []
    size: list[int] = []
    for s in sensitivities:
        layer = info[s.layer]
        numel = int(np.prod(layer.weight_shape))
        ratios = [0.0, *sorted(s.prune_drop)] if prune else [0.0]
        for b in sorted(s.drop):
            for r in ratios:
                proxy = s.proxy_mse[b] + (s.prune_proxy_mse[r] if r else 0.0)
                drop = max(s.drop[b], 0.0) + (max(s.prune_drop[r], 0.0) if r else 0.0)
                options.append((s.layer, LayerChoice(b, r)))
                cost.append((proxy if use_proxy else drop) + 1e-6 * proxy)
                estimate = packed_weight_bytes(numel, numel - round(r * numel), layer.weight_shape[0], b)
                size.append(s.weight_bytes.get((b, r), estimate))
    names = [name for name, _ in options]
    layer_ids = sorted(set(names), key=names.index)
    one_each = np.array([[1.0 if name == layer else 0.0 for name in names] for layer in layer_ids])
    constraints = [LinearConstraint(one_each, 1, 1), LinearConstraint(np.array([size]), -np.inf, budget_bytes)]
    result = milp(c=np.array(cost), constraints=constraints, integrality=np.ones(len(options)), bounds=Bounds(0, 1))
    if not result.success:
        return None
    return dict(options[i] for i in np.flatnonzero(result.x > 0.5))


def allocate_bits(
    sensitivities: Sequence[LayerSensitivity],
    layers: Sequence[LayerInfo],
    budget_bytes: float,
    use_proxy: bool = True,
) -> dict[str, int] | None:
    """Bits per layer alone (no pruning) minimising the summed drop within the budget."""
    allocation = allocate(sensitivities, layers, budget_bytes, use_proxy, prune=False)
    return None if allocation is None else {name: choice.bits for name, choice in allocation.items()}


def warm_start_allocations(
    sensitivities: Sequence[LayerSensitivity],
    layers: Sequence[LayerInfo],
    fractions: Sequence[float],
) -> list[dict[str, LayerChoice]]:
    """Allocations at budgets given as fractions of the layers' bytes in a uniform 8-bit
    trial as deployed (a layer without an 8-bit kernel counts the choice that trial runs it
    in), distinct ones, infeasible budgets skipped."""
    info = {layer.name: layer for layer in layers}

    def at_8_bits(s: LayerSensitivity) -> float:
        # as deployed: 8 bits, or what a uniform 8-bit baseline runs where the device has no
        # 8-bit kernel for the layer (its narrowest offered choice above)
        wider = sorted(b for b, r in s.weight_bytes if b >= 8 and r == 0.0)
        if wider:
            return s.weight_bytes[wider[0], 0.0]
        numel = int(np.prod(info[s.layer].weight_shape))
        return packed_weight_bytes(numel, numel, info[s.layer].weight_shape[0], 8)

    full = sum(at_8_bits(s) for s in sensitivities)
    allocations: list[dict[str, LayerChoice]] = []
    for fraction in fractions:
        allocation = allocate(sensitivities, layers, fraction * full)
        if allocation is not None and allocation not in allocations:
            allocations.append(allocation)
    return allocations
