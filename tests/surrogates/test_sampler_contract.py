"""Optuna's own sampler contract tests, run on every sampler the registry makes.

The registry's defaults are tested as a spec gets them; ``xgboost-eager`` is the XGBoost
sampler past its start-up after one trial, so the contract also covers its model path.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)

from paretoml.surrogates.registry import SAMPLERS, create_sampler

EAGER = {"xgboost-eager": ("xgboost", {"n_startup_trials": 1, "n_candidates": 200, "n_estimators": 10})}
NAMES = sorted(SAMPLERS) + sorted(EAGER)
#: ours, which sample relatively: the relative contract applies to them
RELATIVE = ["xgboost", "xgboost-eager", "zeroth-order"]


def factory(name: str) -> Callable[[], BaseSampler]:
    registered, options = EAGER.get(name, (name, {}))
    return lambda: create_sampler(registered, options, seed=0)


class TestEverySampler(BasicSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture(params=NAMES)
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], BaseSampler]:
        return factory(request.param)


class TestRelativeSamplers(RelativeSamplerTestCase):
    @pytest.fixture(params=RELATIVE)
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], BaseSampler]:
        return factory(request.param)


def test_every_registered_sampler_is_covered():
    assert set(SAMPLERS) <= set(NAMES)
