"""VectorEncoding: snapping, exact keys and the grid of a discrete space."""

from __future__ import annotations

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from paretoml.search_space.encoding import VectorEncoding

DISCRETE = {
    "act": CategoricalDistribution(["relu", "gelu", "tanh"]),
    "bits": CategoricalDistribution([2, 4, 8]),
    "width": IntDistribution(1, 100, log=True),
    "k": IntDistribution(3, 9, step=2),
    "lr": FloatDistribution(-1.0, 1.0, step=0.25),
}


def test_snap_is_encode_of_decode_for_every_kind():
    space = {**DISCRETE, "p": FloatDistribution(1e-7, 1.0, log=True), "q": FloatDistribution(0, 1)}
    encoding = VectorEncoding(space)
    points = np.random.default_rng(0).random((500, encoding.size))
    points[:5], points[5:10] = 0.0, 1.0  # the bounds, where rounding is most delicate
    expected = np.array([encoding.encode(encoding.decode(p)) for p in points])
    snapped = encoding.snap(points)
    assert np.abs(snapped - expected).max() < 1e-12
    assert encoding.keys(snapped) == encoding.keys(expected)


def test_keys_tell_configurations_apart_and_equal():
    encoding = VectorEncoding(DISCRETE)
    points = encoding.snap(np.random.default_rng(1).random((300, encoding.size)))
    configs = [tuple(encoding.decode(p).values()) for p in points]
    keys = encoding.keys(points)
    for i in range(len(points)):
        for j in range(i):
            assert (keys[i] == keys[j]) == (configs[i] == configs[j])


def test_grid_lists_every_configuration_once():
    encoding = VectorEncoding(DISCRETE)
    grid = encoding.grid()
    assert encoding.cardinality() == len(grid) == 3 * 3 * 100 * 4 * 9
    decoded = {tuple(encoding.decode(row).values()) for row in grid}
    assert len(decoded) == len(grid)
    assert np.abs(encoding.snap(grid) - grid).max() < 1e-12
    assert VectorEncoding({**DISCRETE, "q": FloatDistribution(0, 1)}).cardinality() is None
