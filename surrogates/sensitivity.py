"""Cheap per-layer sensitivity, and an ILP that turns it into good first trials.

Sensitivity of a layer at ``b`` bits is measured with only that layer quantized: the drop of
the task's metric (accuracy, or fidelity when the task has no labels), and a forward-only
proxy, the MSE of the logits against the uncompressed model on the example batch. That is
``layers x choices`` cheap evaluations, done once per study by a worker.

Treating the drops as additive (Hubara et al.; HAWQ-V3), the best bitwidth per layer under
a byte budget is a multiple-choice knapsack, solved exactly as an integer program with
SciPy's HiGHS (``scipy.optimize.milp``). Allocations at several budgets become the study's
first trials (``warm_start: {method: sensitivity}`` in a spec).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from paretoml.objectives.evaluate import TrialEvaluator
from paretoml.objectives.measure import packed_weight_bytes, predict
from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.space import TrialConfig


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    #: bits -> drop of the task metric with only this layer at these bits
    drop: dict[int, float]
    #: bits -> MSE of the logits against the uncompressed model (forward-only proxy)
    proxy_mse: dict[int, float]


def measure_sensitivity(evaluator: TrialEvaluator, layers: Sequence[str], choices: Sequence[int]) -> list[LayerSensitivity]:
    bundle = evaluator.bundle
    metric = "accuracy" if bundle.val_labels is not None else "fidelity"
    base = evaluator.evaluate(TrialConfig(), [metric]).values[metric]
    reference = predict(bundle.model, bundle.example_input)
    result = []
    for layer in layers:
        drop: dict[int, float] = {}
        mse: dict[int, float] = {}
        for bits in choices:
            config = TrialConfig(bits={layer: bits})
            drop[bits] = base - evaluator.evaluate(config, [metric]).values[metric]
            model, _ = evaluator.build(config)
            mse[bits] = float(torch.mean((predict(model, bundle.example_input) - reference) ** 2).item())
        result.append(LayerSensitivity(layer, drop, mse))
    return result


def allocate_bits(
    sensitivities: Sequence[LayerSensitivity],
    layers: Sequence[LayerInfo],
    budget_bytes: float,
    use_proxy: bool = True,
) -> dict[str, int] | None:
    """Bits per layer minimising the summed drop with weight bytes <= ``budget_bytes``.

    Returns None when even the fewest bits everywhere exceed the budget. Ties in the drop
    (common for a measured accuracy on a small split) are broken by the proxy MSE.
    """
    info = {layer.name: layer for layer in layers}
    names, bits, cost, size = [], [], [], []
    for s in sensitivities:
        layer = info[s.layer]
        numel = int(np.prod(layer.weight_shape))
        for b in sorted(s.drop):
            names.append(s.layer)
            bits.append(b)
            primary = s.proxy_mse[b] if use_proxy else max(s.drop[b], 0.0)
            cost.append(primary + 1e-6 * s.proxy_mse[b])
            size.append(packed_weight_bytes(numel, numel, layer.weight_shape[0], b))
    n = len(names)
    layer_ids = sorted(set(names), key=names.index)
    one_each = np.array([[1.0 if names[i] == layer else 0.0 for i in range(n)] for layer in layer_ids])
    constraints = [LinearConstraint(one_each, 1, 1), LinearConstraint(np.array([size]), -np.inf, budget_bytes)]
    result = milp(c=np.array(cost), constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, 1))
    if not result.success:
        return None
    chosen = np.flatnonzero(result.x > 0.5)
    return {names[i]: bits[i] for i in chosen}


def warm_start_allocations(
    sensitivities: Sequence[LayerSensitivity],
    layers: Sequence[LayerInfo],
    fractions: Sequence[float],
) -> list[dict[str, int]]:
    """Allocations at budgets given as fractions of the layers' uniform 8-bit weight bytes."""
    info = {layer.name: layer for layer in layers}
    full = sum(packed_weight_bytes(int(np.prod(info[s.layer].weight_shape)), int(np.prod(info[s.layer].weight_shape)),
                                   info[s.layer].weight_shape[0], 8) for s in sensitivities)
    allocations: list[dict[str, int]] = []
    for fraction in fractions:
        allocation = allocate_bits(sensitivities, layers, fraction * full)
        if allocation is not None and allocation not in allocations:
            allocations.append(allocation)
    return allocations
