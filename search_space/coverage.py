"""How much of a model the knobs reach: the share of its parameters that no knob covers.

A model whose bytes sit in layers no knob takes (a recurrent cell before recurrent layers
were a kind, a custom module) has every front point near its full size; the share is
printed when a study starts and stored with it, so that is seen rather than guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.space import JointSpace


@dataclass(frozen=True)
class Coverage:
    """Parameters of a model (floating-point, buffers included) and those a knob covers."""

    params: int
    covered: int
    #: the uncovered layers' kinds, most parameters first (e.g. "embedding"); "other" for the
    #: tensors outside every layer (biases, norms, modules of no layer kind)
    uncovered_by_kind: dict[str, int]

    @property
    def uncovered_fraction(self) -> float:
        return 1.0 - self.covered / self.params if self.params else 0.0

    def describe(self) -> str:
        share = self.uncovered_fraction
        parts = ", ".join(f"{kind} {count:,}" for kind, count in self.uncovered_by_kind.items())
        line = (f"{100 * share:.1f}% of the model's {self.params:,} parameters are outside every knob"
                + (f" ({parts})" if parts else ""))
        return line

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uncovered_fraction": self.uncovered_fraction}


def coverage(layers: Sequence[LayerInfo], space: JointSpace, other_params: int) -> Coverage:
    """``other_params``: the floating-point tensors besides the layers' weights (biases, norms,
    and modules of no layer kind), as the evaluator counts them."""
    reached = set(space.covered_layers)
    uncovered: dict[str, int] = {}
    covered = total = 0
    for layer in layers:
        numel = 1
        for dim in layer.weight_shape:
            numel *= dim
        total += numel
        if layer.name in reached:
            covered += numel
        else:
            uncovered[layer.kind] = uncovered.get(layer.kind, 0) + numel
    if other_params:
        uncovered["other"] = other_params
    total += other_params
    return Coverage(total, covered, dict(sorted(uncovered.items(), key=lambda item: -item[1])))
