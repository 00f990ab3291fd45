"""Objectives as losses, and the non-dominated set: shared by samplers, the frontier and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from optuna.study import StudyDirection


def loss_signs(directions: Sequence[StudyDirection | str]) -> np.ndarray:
    """Multiply objective values by these to get losses: maximised objectives are negated."""
    return np.array([-1.0 if d in (StudyDirection.MAXIMIZE, "maximize") else 1.0 for d in directions])


def non_dominated(losses: np.ndarray) -> np.ndarray:
    """Mask of the non-dominated rows; each front point eliminates what it dominates, so the
    cost is (front size) x n rather than n^2."""
    n = len(losses)
    order = np.lexsort(losses.T[::-1])
    sorted_losses = losses[order]
    alive = np.ones(n, dtype=bool)
    for i in range(n):
        if not alive[i]:
            continue
        point = sorted_losses[i]
        dominated = np.all(point <= sorted_losses, axis=1) & np.any(point < sorted_losses, axis=1)
        alive &= ~dominated
    mask = np.empty(n, dtype=bool)
    mask[order] = alive
    return mask
