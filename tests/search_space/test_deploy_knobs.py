"""The knobs and budget that deployable compression adds: activation bits, 2:4, latency."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution

from paretoml.search_space.constraints import LatencyBudget, constraint_values, needs_measurement
from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.knobs import ActivationBitsKnob, BitwidthKnob, PruneKnob
from paretoml.search_space.space import JointSpace, TrialConfig
from paretoml.service.spec import SpecError, parse_spec


def _layers() -> list[LayerInfo]:
    import torch
    from torch import nn

    from paretoml.search_space.introspect import introspect

    model = nn.Sequential(nn.Conv1d(4, 8, 3), nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 6))
    return introspect(model, torch.randn(2, 4, 8))


def test_activation_bits_attach_to_linear_layers_and_16_means_float():
    space = JointSpace([BitwidthKnob(), ActivationBitsKnob()], _layers())
    assert [n for n in space.param_names if n.startswith("abits:")] == ["abits:2", "abits:4"]
    params = {**space.uniform_params(bits=8), "abits:2": 8}
    config = space.config_from_params(params)
    assert config.act_bits == {"2": 8}  # 16 leaves layer 4's activations in float
    assert space.uniform_params(bits=8)["abits:2"] == 16  # baselines keep float activations
    w8a8 = space.config_from_params(space.uniform_params(bits=8, act_bits=8))  # unless asked: W8A8
    assert w8a8.act_bits == {"2": 8, "4": 8} and set(w8a8.bits.values()) == {8}
    with pytest.raises(ValueError, match="activation bits 4 is not among"):
        space.uniform_params(act_bits=4)
    assert TrialConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="activation bits \\[4\\] not supported"):
        ActivationBitsKnob(choices=[4, 8])


def test_two_four_pruning_is_dense_or_half_and_only_on_linear_layers():
    space = JointSpace([PruneKnob(method="2:4", layers={"kinds": ["linear", "conv"]})], _layers())
    assert space.distributions == {"prune:2": CategoricalDistribution([0.0, 0.5]),
                                   "prune:4": CategoricalDistribution([0.0, 0.5])}
    assert any("2:4 pruning skips 0" in note for note in space.notes)
    config = space.config_from_params({"prune:2": 0.5, "prune:4": 0.0})
    assert config.prune_method == {"2": "2:4", "4": "2:4"} and config.prune["2"] == 0.5
    assert space.uniform_params(prune=0.3) == {"prune:2": 0.5, "prune:4": 0.5}


def test_latency_budget_comes_from_the_measured_latency():
    spec = parse_spec({"task": "synthetic", "knobs": [{"kind": "bitwidth"}], "objectives": [{"name": "fidelity"}],
                       "constraints": [{"kind": "latency_ms", "max_ms": 2.5}], "n_trials": 3})
    assert needs_measurement(spec.constraints) == ["latency_ms"]
    budget = spec.constraints[0]
    assert isinstance(budget, LatencyBudget)
    assert constraint_values([budget], [], TrialConfig(), 0, {"latency_ms": 3.0}) == [0.5]
    with pytest.raises(ValueError, match="needs the trial's measured latency"):
        constraint_values([budget], [], TrialConfig(), 0)
    with pytest.raises(SpecError, match="constraints.0.latency_ms.max_ms"):
        parse_spec({"task": "synthetic", "knobs": [{"kind": "bitwidth"}], "objectives": [{"name": "fidelity"}],
                    "constraints": [{"kind": "latency_ms", "max_ms": 0}], "n_trials": 3})
