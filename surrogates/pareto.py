"""Objectives as losses, non-domination, Pareto ranks and hypervolume: the one Pareto module.

Samplers, pruners, the stored frontier and the benchmarks all use these. The arithmetic is
moocore's (a small, well-kept C library that pymoo builds on); everything here is in
minimisation terms: turn values into losses with :func:`loss_signs` first.
"""

from __future__ import annotations

from collections.abc import Sequence

import moocore
import numpy as np
from optuna.study import StudyDirection

__all__ = ["better_front_count", "dominates", "hypervolume", "hypervolume_curve", "loss_signs", "non_dominated",
           "pareto_ranks"]


def loss_signs(directions: Sequence[StudyDirection | str]) -> np.ndarray:
    """Multiply objective values by these to get losses: maximised objectives are negated."""
    return np.array([-1.0 if d in (StudyDirection.MAXIMIZE, "maximize") else 1.0 for d in directions])


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Loss vector ``a`` is no worse than ``b`` anywhere and better somewhere."""
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated(losses: np.ndarray) -> np.ndarray:
    """Mask of the non-dominated rows; equal rows are all kept (as in Optuna's best_trials)."""
    losses = np.asarray(losses, dtype=float)
    if len(losses) == 0:
        return np.zeros(0, dtype=bool)
    return moocore.is_nondominated(losses, keep_weakly=True)


def pareto_ranks(losses: np.ndarray) -> np.ndarray:
    """Each row's non-dominated front, 0 for the first (non-dominated sorting)."""
    losses = np.asarray(losses, dtype=float)
    if len(losses) == 0:
        return np.zeros(0, dtype=int)
    return np.asarray(moocore.pareto_rank(losses), dtype=int)


def better_front_count(losses: np.ndarray, index: int) -> int:
    """How many rows lie in strictly better non-dominated fronts than row ``index``."""
    if not 0 <= index < len(losses):
        raise ValueError("index not among the rows")
    ranks = pareto_ranks(losses)
    return int(np.count_nonzero(ranks < ranks[index]))


def hypervolume(losses: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by ``losses`` and bounded by ``reference`` (minimisation). Points not
    strictly better than the reference in every objective add nothing (as with Optuna's
    ``compute_hypervolume`` given only the points inside)."""
    losses = np.asarray(losses, dtype=float).reshape(-1, len(reference))
    inside = losses[np.all(losses < reference, axis=1)]
    return float(moocore.hypervolume(inside, ref=np.asarray(reference, dtype=float))) if len(inside) else 0.0


def hypervolume_curve(losses: np.ndarray, reference: np.ndarray) -> list[float]:
    """Hypervolume of the first n rows' front against ``reference``, for every n (the
    front is kept as rows arrive, so the cost grows with the front, not with n)."""
    losses = np.asarray(losses, dtype=float)
    reference = np.asarray(reference, dtype=float)
    curve: list[float] = []
    front = np.empty((0, len(reference)))
    last = 0.0
    for point in losses:
        if np.all(point < reference) and not np.any(np.all(front <= point, axis=1)):
            front = np.vstack([front[~np.all(point <= front, axis=1)], point])
            last = hypervolume(front, reference)
        curve.append(last)
    return curve
