"""Per-layer KV-cache sensitivity and the allocation of precision pairs under a byte budget.

As KVTuner does offline: each attention layer's cache is set, alone, to each allowed
(key bits, value bits) pair, and the change of the task's primary metric on the
calibration split is recorded (keys are usually the more sensitive half). Treating the
changes as additive over layers, the pair per layer that changes the metric least with the
cache's bytes per token within a budget is a multiple-choice knapsack, solved exactly with
SciPy's HiGHS (``scipy.optimize.milp``), as the weight-bits warm start is
(:mod:`.sensitivity`). Budgets are fractions of the cache at the widest pair everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from paretoml.objectives.evaluate import TrialEvaluator
from paretoml.search_space.space import TrialConfig

Pair = tuple[int, int]


@dataclass(frozen=True)
class KVSensitivity:
    """One attention layer (named by its key projection)."""

    layer: str
    #: pair -> worsening of the primary metric with only this layer's cache at that pair
    drop: dict[Pair, float]
    #: pair -> this layer's cache bytes per token (scales included)
    bytes_per_token: dict[Pair, float]


def layer_bytes_per_token(evaluator: TrialEvaluator, layer: str, pair: Pair) -> float:
    """Bytes one token adds to ``layer``'s cache at ``pair`` (the model's KV heads and width)."""
    from paretoml.objectives.deploy.kv_cache import KVFormat, bytes_per_token

    module = evaluator.model.get_submodule(layer)
    config = evaluator.model.config  # type: ignore[union-attr]
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return bytes_per_token(KVFormat(*pair), module.out_features // head_dim, head_dim)  # type: ignore[arg-type]


def measure_kv_sensitivity(evaluator: TrialEvaluator, layers: Sequence[str], pairs: Sequence[Pair]) -> list[KVSensitivity]:
    """Single-layer changes of the primary metric for every pair but the widest (which is
    the reference: a change of 0), on the cheap split, scored without deployment."""
    metric = evaluator.primary_metric
    sign = -1.0 if evaluator.catalog[metric].direction == "minimize" else 1.0
    split = evaluator.cheap_split
    widest = max(pairs, key=lambda p: (p[0] + p[1], p[0]))

    def value(config: TrialConfig) -> float:
        model, _ = evaluator.build(config)
        return evaluator.score(model, [metric], split)[metric]

    base = value(TrialConfig())
    result = []
    for layer in layers:
        drop = {pair: 0.0 if pair == widest else sign * (base - value(TrialConfig(kv_bits={layer: pair})))
                for pair in pairs}
        result.append(KVSensitivity(layer, drop, {p: layer_bytes_per_token(evaluator, layer, p) for p in pairs}))
    return result


def allocate_kv(sensitivities: Sequence[KVSensitivity], budget_bytes_per_token: float) -> dict[str, Pair] | None:
    """The pair per layer with the least summed change within the budget; None if none fits."""
    options = [(s.layer, pair) for s in sensitivities for pair in s.drop]
    cost = np.array([max(s.drop[pair], 0.0) + 1e-9 * s.bytes_per_token[pair] for s in sensitivities for pair in s.drop])
    size = np.array([s.bytes_per_token[pair] for s in sensitivities for pair in s.drop])
    layers = [s.layer for s in sensitivities]
    one_each = np.array([[1.0 if name == layer else 0.0 for name, _ in options] for layer in layers])
    constraints = [LinearConstraint(one_each, 1, 1), LinearConstraint(size[None, :], -np.inf, budget_bytes_per_token)]
    result = milp(c=cost, constraints=constraints, integrality=np.ones(len(options)), bounds=Bounds(0, 1))
    if not result.success:
        return None
    return dict(options[i] for i in np.flatnonzero(result.x > 0.5))


def kv_warm_start_allocations(sensitivities: Sequence[KVSensitivity],
                              fractions: Sequence[float]) -> list[dict[str, Pair]]:
    """Allocations at budgets given as fractions of the widest pair's bytes everywhere
    (distinct ones, infeasible budgets skipped); none for a model without KV knobs."""
    if not sensitivities:
        return []
    full = sum(max(s.bytes_per_token.values()) for s in sensitivities)
    allocations: list[dict[str, Pair]] = []
    for fraction in fractions:
        allocation = allocate_kv(sensitivities, fraction * full)
        if allocation is not None and allocation not in allocations:
            allocations.append(allocation)
    return allocations


def as_rows(sensitivities: Sequence[KVSensitivity]) -> list[Mapping[str, object]]:
    """JSON-able rows (a study attribute): pairs as ``K8V4`` labels."""
    return [{"layer": s.layer, "drop": {f"K{k}V{v}": d for (k, v), d in s.drop.items()},
             "bytes_per_token": {f"K{k}V{v}": b for (k, v), b in s.bytes_per_token.items()}} for s in sensitivities]
