"""Parameters <-> points of the unit cube, for surrogate models over any Optuna space.

Floats and ints map linearly (logarithmically on log scales) to [0, 1]; categorical
choices that are all numbers (bitwidths, batch sizes) keep their order as one coordinate;
other categoricals are one-hot. Decoding snaps to the nearest valid value.

``snap`` maps any points to the encodings of the configurations they decode to (vectorised),
so configurations can be compared exactly by ``keys``; spaces without continuous floats can be
counted and enumerated (``cardinality``, ``grid``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

#: decimals kept when comparing encodings: continuous floats decode and re-encode to within ~1e-15
KEY_DECIMALS = 9


def is_ordinal(dist: CategoricalDistribution) -> bool:
    return all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in dist.choices)


def n_values(dist: BaseDistribution) -> int | None:
    """How many values ``dist`` has; None for a continuous float."""
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices)
    if isinstance(dist, FloatDistribution) and dist.step is None:
        return None if dist.high > dist.low else 1
    step = dist.step if dist.step is not None else 1  # type: ignore[attr-defined]
    if isinstance(dist, IntDistribution) and dist.log:
        step = 1
    return int(round((float(dist.high) - float(dist.low)) / step)) + 1  # type: ignore[attr-defined]


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

    def decode_values(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """The decoded value of every parameter for every row of ``points``, vectorised
        (``decode`` row by row, as arrays): numbers for numeric parameters and ordinal
        categoricals, the choice's index for other categoricals. Surrogates that describe a
        configuration by what it does to each layer read thousands of candidates this way."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        out: dict[str, np.ndarray] = {}
        i = 0
        for name, dist in self.distributions.items():
            w = width(dist)
            chunk = points[:, i : i + w]
            i += w
            if isinstance(dist, CategoricalDistribution):
                n = len(dist.choices)
                if w > 1:
                    out[name] = np.argmax(chunk, axis=1).astype(np.float64)
                    continue
                index = np.clip(np.round(chunk[:, 0] * (n - 1)), 0, n - 1).astype(int) if n > 1 else np.zeros(len(chunk), int)
                out[name] = np.asarray(dist.choices, dtype=np.float64)[index]
                continue
            u = self._snap_numeric(dist, np.clip(chunk[:, 0], 0.0, 1.0))
            low, high = float(dist.low), float(dist.high)  # type: ignore[attr-defined]
            if dist.log:  # type: ignore[attr-defined]
                out[name] = np.exp(math.log(low) + u * (math.log(high) - math.log(low)))
            else:
                out[name] = low + u * (high - low)
        return out

    # -- exact comparison and enumeration ------------------------------------------------------
    def snap(self, points: np.ndarray) -> np.ndarray:
        """``encode(decode(p))`` for every row ``p`` of ``points``, without leaving numpy."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        out = np.empty_like(points)
        i = 0
        for dist in self.distributions.values():
            w = width(dist)
            chunk = points[:, i : i + w]
            if isinstance(dist, CategoricalDistribution):
                n = len(dist.choices)
                if w > 1:
                    out[:, i : i + w] = np.eye(w)[np.argmax(chunk, axis=1)]
                else:
                    index = np.clip(np.round(chunk[:, 0] * (n - 1)), 0, n - 1) if n > 1 else np.zeros(len(chunk))
                    out[:, i] = index / (n - 1) if n > 1 else 0.0
            else:
                out[:, i] = self._snap_numeric(dist, np.clip(chunk[:, 0], 0.0, 1.0))
            i += w
        return out

    @staticmethod
    def _snap_numeric(dist: BaseDistribution, u: np.ndarray) -> np.ndarray:
        low, high = float(dist.low), float(dist.high)  # type: ignore[attr-defined]
        if high <= low:
            return np.zeros_like(u)
        step = dist.step  # type: ignore[attr-defined]
        if step is None:
            return u  # a continuous float decodes to itself
        log = bool(dist.log)  # type: ignore[attr-defined]
        x = np.exp(math.log(low) + u * (math.log(high) - math.log(low))) if log else low + u * (high - low)
        x = np.clip(low + np.round((x - low) / step) * step, low, high)
        if isinstance(dist, IntDistribution):
            x = np.round(x)
        if log:
            return (np.log(x) - math.log(low)) / (math.log(high) - math.log(low))
        return (x - low) / (high - low)

    @staticmethod
    def keys(points: np.ndarray) -> list[bytes]:
        """One hashable key per row of snapped ``points``: equal keys, equal configurations."""
        rounded = np.round(np.atleast_2d(points), KEY_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
        return [row.tobytes() for row in rounded]

    def cardinality(self) -> int | None:
        """The number of configurations; None when a float is continuous."""
        total = 1
        for dist in self.distributions.values():
            n = n_values(dist)
            if n is None:
                return None
            total *= n
        return total

    def grid(self) -> np.ndarray:
        """Every configuration, encoded (one row each): only for small discrete spaces."""
        axes: list[np.ndarray] = []
        for dist in self.distributions.values():
            n = n_values(dist)
            if n is None:
                raise ValueError("a continuous float has no grid")
            if isinstance(dist, CategoricalDistribution) and width(dist) > 1:
                axes.append(np.eye(n))
            else:
                values = self._numeric_values(dist, n)
                axes.append(values[:, None])
        rows = np.zeros((1, 0))
        for axis in axes:
            rows = np.hstack([np.repeat(rows, len(axis), axis=0), np.tile(axis, (len(rows), 1))])
        return rows

    def _numeric_values(self, dist: BaseDistribution, n: int) -> np.ndarray:
        if isinstance(dist, CategoricalDistribution):
            return np.arange(n) / (n - 1) if n > 1 else np.zeros(1)
        low = float(dist.low)  # type: ignore[attr-defined]
        step = 1 if isinstance(dist, IntDistribution) and dist.log else dist.step  # type: ignore[attr-defined]
        values = np.array([low + k * step for k in range(n)])
        return np.unique(np.round(self.encode_values(dist, values), 15))

    @staticmethod
    def encode_values(dist: BaseDistribution, values: np.ndarray) -> np.ndarray:
        low, high = float(dist.low), float(dist.high)  # type: ignore[attr-defined]
        if high <= low:
            return np.zeros(len(values))
        if dist.log:  # type: ignore[attr-defined]
            return (np.log(values) - math.log(low)) / (math.log(high) - math.log(low))
        return (values - low) / (high - low)
