"""Parameters <-> points of the unit cube, for surrogate models over any Optuna space.

Floats and ints map linearly (logarithmically on log scales) to [0, 1]; categorical
choices that are all numbers (bitwidths, batch sizes) keep their order as one coordinate;
other categoricals are one-hot. Decoding snaps to the nearest valid value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution


def is_ordinal(dist: CategoricalDistribution) -> bool:
    return all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in dist.choices)


def width(dist: BaseDistribution) -> int:
    if isinstance(dist, CategoricalDistribution) and not is_ordinal(dist):
        return len(dist.choices)
    return 1


class VectorEncoding:
    """A fixed order of named distributions and their unit-cube coordinates."""

    def __init__(self, distributions: Mapping[str, BaseDistribution]) -> None:
        self.distributions = dict(distributions)
        self.size = sum(width(d) for d in self.distributions.values())

    def encode(self, params: Mapping[str, Any]) -> np.ndarray:
        out: list[float] = []
        for name, dist in self.distributions.items():
            value = params[name]
            if isinstance(dist, CategoricalDistribution):
                index = dist.to_internal_repr(value)
                if is_ordinal(dist):
                    out.append(index / (len(dist.choices) - 1) if len(dist.choices) > 1 else 0.0)
                else:
                    out.extend(1.0 if i == index else 0.0 for i in range(len(dist.choices)))
                continue
            low, high, x = float(dist.low), float(dist.high), float(value)  # type: ignore[attr-defined]
            if dist.log:  # type: ignore[attr-defined]
                low, high, x = math.log(low), math.log(high), math.log(x)
            out.append((x - low) / (high - low) if high > low else 0.0)
        return np.asarray(out, dtype=np.float64)

    def decode(self, vector: np.ndarray) -> dict[str, Any]:
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape != (self.size,):
            raise ValueError(f"expected a vector of length {self.size}, got {vector.shape}")
        params: dict[str, Any] = {}
        i = 0
        for name, dist in self.distributions.items():
            chunk = vector[i : i + width(dist)]
            i += width(dist)
            if isinstance(dist, CategoricalDistribution):
                n = len(dist.choices)
                if is_ordinal(dist):
                    index = int(np.clip(round(chunk[0] * (n - 1)), 0, n - 1))
                else:
                    index = int(np.argmax(chunk))
                params[name] = dist.choices[index]
                continue
            u = float(np.clip(chunk[0], 0.0, 1.0))
            low, high = float(dist.low), float(dist.high)  # type: ignore[attr-defined]
            if dist.log:  # type: ignore[attr-defined]
                x = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
            else:
                x = low + u * (high - low)
            step = dist.step  # type: ignore[attr-defined]
            if step is not None:
                x = low + round((x - low) / step) * step
            x = min(max(x, low), high)
            params[name] = int(round(x)) if isinstance(dist, IntDistribution) else float(x)
        return params
