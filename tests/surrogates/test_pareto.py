"""The one Pareto module (moocore underneath) against the definitions it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from optuna._hypervolume import compute_hypervolume  # the oracle only: what stored hypervolumes were

from paretoml.surrogates.pareto import (
    better_front_count,
    dominates,
    hypervolume,
    hypervolume_curve,
    non_dominated,
    pareto_ranks,
)


def _brute_non_dominated(x: np.ndarray) -> np.ndarray:
    return np.array([not any(dominates(other, row) for other in x) for row in x])


@pytest.mark.parametrize("dims", [2, 3, 4])
def test_hypervolume_keeps_optunas_convention(dims):
    rng = np.random.default_rng(dims)
    losses = rng.random((60, dims)) * 1.2  # some beyond the reference point
    reference = np.full(dims, 1.1)
    inside = losses[np.all(losses < reference, axis=1)]
    assert hypervolume(losses, reference) == pytest.approx(compute_hypervolume(inside, reference), rel=1e-12)
    assert hypervolume(np.empty((0, dims)), reference) == 0.0
    assert hypervolume(np.array([[0.5] * dims]), reference) == pytest.approx(0.6 ** dims)


def test_non_dominated_keeps_ties_and_matches_the_definition():
    rng = np.random.default_rng(0)
    losses = np.round(rng.random((80, 3)), 1)  # many ties
    losses = np.vstack([losses, losses[:5]])
    assert (non_dominated(losses) == _brute_non_dominated(losses)).all()
    assert non_dominated(np.empty((0, 2))).shape == (0,)


def test_ranks_are_non_dominated_sorting():
    losses = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [3.0, 3.0], [2.0, 2.5]])
    assert list(pareto_ranks(losses)) == [0, 0, 0, 2, 1]
    assert [better_front_count(losses, i) for i in range(5)] == [0, 0, 0, 4, 3]
    with pytest.raises(ValueError):
        better_front_count(losses, 5)


def test_curve_grows_with_the_front():
    losses = np.array([[0.5, 0.5], [0.6, 0.6], [0.2, 0.9], [2.0, 0.0], [0.1, 0.1]])
    curve = hypervolume_curve(losses, np.array([1.0, 1.0]))
    assert curve == pytest.approx([0.25, 0.25, 0.25 + 0.3 * 0.1, 0.25 + 0.3 * 0.1, 0.81])
