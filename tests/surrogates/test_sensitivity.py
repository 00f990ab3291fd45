"""Per-layer sensitivity on the real digits CNN, the ILP allocator and warm-started studies."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest
import torch
from scipy.stats import spearmanr

from paretoml.objectives.deploy import kernel_choices
from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
from paretoml.objectives.measure import LatencySettings
from paretoml.objectives.tasks.registry import create_task
from paretoml.search_space.deploy_mode import DEQUANTIZE_AT_LOAD, RUNTIME, DeployMode
from paretoml.search_space.model_bytes import packed_weight_bytes
from paretoml.search_space.trial_attrs import BASELINE_ATTR
from paretoml.service.executors import create_executor
from paretoml.service.runner import StudyRunner
from paretoml.service.spec import parse_spec
from paretoml.surrogates.sensitivity import (
    LayerChoice,
    LayerSensitivity,
    allocate,
    allocate_bits,
    measure_sensitivity,
    prune_grid,
    warm_start_allocations,
)

CHOICES = [2, 3, 4, 6, 8, 16]
RATIOS = prune_grid(0.0, 0.9)


def _evaluator(deploy: DeployMode) -> TrialEvaluator:
    torch.manual_seed(0)
    settings = MeasureSettings(latency=LatencySettings(warmup=2, repeats=5), deploy=deploy)
    return TrialEvaluator(create_task("digits-cnn"), settings)


@pytest.fixture(scope="module")
def digits_evaluator():
    """Dequantize-at-load: every choice on every layer, and pruned zeros cost no bytes (the
    packed file's bitmap), so the allocator trades bits against pruning."""
    return _evaluator(DeployMode(DEQUANTIZE_AT_LOAD))


@pytest.fixture(scope="module")
def sensitivities(digits_evaluator):
    return measure_sensitivity(digits_evaluator, [l.name for l in digits_evaluator.layers], CHOICES, RATIOS)


def _offered(evaluator: TrialEvaluator) -> dict[str, list[int]]:
    """Each layer's bit choices with a kernel of their own format on the evaluator's device."""
    choices = {"bits": {l.name: list(CHOICES) for l in evaluator.layers}}
    return kernel_choices(evaluator.model, choices, evaluator.device, evaluator.settings.deploy)["bits"]


def test_prune_grid_covers_the_knob_range_on_its_step():
    assert RATIOS == [0.25, 0.5, 0.7, 0.85, 0.9]
    assert prune_grid(0.1, 0.6) == [0.1, 0.25, 0.5, 0.6]
    assert prune_grid(0.0, 0.75, step=0.125) == [0.25, 0.5, 0.75]  # 0.7 and 0.85 snap onto the grid


def test_forward_proxy_ranks_layers_like_the_measured_drop(sensitivities):
    # At 6 bits and above no single layer changes a single validation prediction (drop 0.0
    # for every layer), so only 2-4 bits carry a ranking. Measured here: Spearman 0.70
    # (p = 0.01) over those 12 (layer, bits) pairs; 0.5 leaves room for numerical noise
    # across platforms while still failing a proxy unrelated to the real degradation.
    drop = [s.drop[b] for s in sensitivities for b in (2, 3, 4)]
    proxy = [s.proxy_mse[b] for s in sensitivities for b in (2, 3, 4)]
    rho = spearmanr(drop, proxy).statistic
    assert rho > 0.5, rho
    for s in sensitivities:  # fewer bits never hurt less, by the proxy
        values = [s.proxy_mse[b] for b in CHOICES]
        assert all(a >= b for a, b in zip(values, values[1:]))


def test_pruning_more_of_a_layer_never_hurts_less(sensitivities):
    for s in sensitivities:
        assert sorted(s.prune_proxy_mse) == RATIOS
        values = [s.prune_proxy_mse[r] for r in RATIOS]
        assert all(a <= b for a, b in zip(values, values[1:])), (s.layer, values)
    # the forward proxy and the measured accuracy drop agree on which layer suffers most at 90 %
    worst_by_proxy = max(sensitivities, key=lambda s: s.prune_proxy_mse[0.9]).layer
    worst_by_drop = max(sensitivities, key=lambda s: s.prune_drop[0.9]).layer
    assert worst_by_proxy == worst_by_drop


def test_joint_ilp_is_the_exact_optimum_over_bits_and_ratios(sensitivities, digits_evaluator):
    # a brute force over every (bits, ratio) per layer, on a subset of the choices so that
    # it stays small (9 options per layer, 6,561 combinations)
    bits, ratios = (2, 4, 8), (0.5, 0.9)
    subset = [LayerSensitivity(s.layer, {b: s.drop[b] for b in bits}, {b: s.proxy_mse[b] for b in bits},
                               {r: s.prune_drop[r] for r in ratios}, {r: s.prune_proxy_mse[r] for r in ratios},
                               s.weight_bytes)
              for s in sensitivities]
    layers = {l.name: l for l in digits_evaluator.layers}
    by_layer = {s.layer: s for s in subset}

    def size(name: str, choice: LayerChoice) -> int:
        return by_layer[name].weight_bytes[choice]

    def cost(allocation: dict[str, LayerChoice]) -> float:
        return sum(s.proxy_mse[allocation[s.layer].bits] + s.prune_proxy_mse.get(allocation[s.layer].prune, 0.0)
                   for s in subset)

    options = [LayerChoice(b, r) for b in bits for r in (0.0, *ratios)]
    two_bits = sum(s.weight_bytes[(2, 0.0)] for s in subset)
    smallest = sum(min(s.weight_bytes[c] for c in options) for s in subset)
    budget = (smallest + two_bits) // 2  # below uniform 2-bit: pruning needed
    assert allocate_bits(subset, digits_evaluator.layers, budget) is None
    allocation = allocate(subset, digits_evaluator.layers, budget)
    assert allocation is not None and set(allocation) == set(layers)
    assert sum(size(n, c) for n, c in allocation.items()) <= budget
    best = min((dict(zip(layers, combo)) for combo in itertools.product(options, repeat=len(layers))
                if sum(size(n, c) for n, c in zip(layers, combo)) <= budget), key=cost)
    assert cost(allocation) == pytest.approx(cost(best), rel=1e-6)


def test_ilp_is_the_exact_optimum_of_the_additive_model(sensitivities, digits_evaluator):
    layers = {l.name: l for l in digits_evaluator.layers}
    by_layer = {s.layer: s for s in sensitivities}

    def size(name: str, bits: int) -> int:
        return by_layer[name].weight_bytes[(bits, 0.0)]

    budget = 12000
    allocation = allocate_bits(sensitivities, digits_evaluator.layers, budget)
    assert allocation is not None and set(allocation) == set(layers)
    assert sum(size(n, b) for n, b in allocation.items()) <= budget

    def cost(choice: dict[str, int]) -> float:
        return sum(s.proxy_mse[choice[s.layer]] for s in sensitivities)

    best = min(
        (dict(zip(layers, combo)) for combo in itertools.product(CHOICES, repeat=len(layers))
         if sum(size(n, b) for n, b in zip(layers, combo)) <= budget),
        key=cost,
    )
    assert cost(allocation) == pytest.approx(cost(best), rel=1e-6)
    assert allocate_bits(sensitivities, digits_evaluator.layers, 10) is None  # infeasible budget


@pytest.mark.parametrize("deploy", [DeployMode(DEQUANTIZE_AT_LOAD), DeployMode(RUNTIME)], ids=lambda d: d.label)
def test_allocated_bytes_are_the_bytes_the_trial_measures(deploy):
    # sizes are counted per layer as the deployment counts them, so the allocator's total is
    # exact: the packed file's bytes, or the deployed kernels' resident bytes (runtime mode,
    # over the choices the CPU offers each layer: conv1 gets no 2-bit kernel there)
    from paretoml.search_space.space import TrialConfig

    evaluator = _evaluator(deploy)
    offered = _offered(evaluator) if deploy.strict else {l.name: CHOICES for l in evaluator.layers}
    measured_sens = measure_sensitivity(evaluator, list(offered), offered, RATIOS)
    assert all(set(s.drop) == set(offered[s.layer]) for s in measured_sens)
    modules = dict(evaluator.model.named_modules())
    float_bytes = sum(p.numel() * p.element_size() for name in offered for p in modules[name].parameters())
    other = evaluator.reference(["model_bytes"]).values["model_bytes"] - float_bytes
    smallest = sum(min(s.weight_bytes.values()) for s in measured_sens)
    largest = sum(max(s.weight_bytes.values()) for s in measured_sens)
    for fraction in (0.02, 0.1, 0.3):
        budget = smallest + fraction * (largest - smallest)
        allocation = allocate(measured_sens, evaluator.layers, budget)
        config = TrialConfig(bits={n: c.bits for n, c in allocation.items()},
                             prune={n: c.prune for n, c in allocation.items() if c.prune})
        measured = evaluator.evaluate(config, ["model_bytes"]).values["model_bytes"]
        predicted = sum(s.weight_bytes[allocation[s.layer]] for s in measured_sens)
        assert measured == other + predicted and predicted <= budget


def test_rounding_to_few_bits_makes_zeros_the_packed_file_stores_cheaply(sensitivities, digits_evaluator):
    dense = sum(packed_weight_bytes(int(np.prod(l.weight_shape)), int(np.prod(l.weight_shape)), l.weight_shape[0], 2)
                for l in digits_evaluator.layers)
    assert sum(s.weight_bytes[(2, 0.0)] for s in sensitivities) < dense


def test_allocations_grow_with_the_budget(sensitivities, digits_evaluator):
    layers = {l.name: l for l in digits_evaluator.layers}
    allocations = warm_start_allocations(sensitivities, digits_evaluator.layers, [0.1, 0.2, 0.3, 0.45, 0.6])
    assert len(allocations) >= 3
    kept_bits = [sum(c.bits * (1 - c.prune) * np.prod(layers[n].weight_shape) for n, c in a.items())
                 for a in allocations]
    assert kept_bits == sorted(kept_bits)
    # 0.1 of 8-bit is out of reach (skipped); 0.2 is below dense uniform 2-bit, so it needs pruning
    assert any(c.prune > 0 for c in allocations[0].values())


def test_a_spec_with_warm_start_enqueues_the_allocations_first():
    spec = parse_spec({
        "task": "digits-cnn",
        "knobs": [{"kind": "bitwidth", "choices": CHOICES}],
        "objectives": [{"name": "accuracy"}, {"name": "model_bytes"}],
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        # runtime mode on the CPU: the convs run fp32 (no low-bit conv kernel), fc2 has no
        # 4-bit kernel for its 10 rows, so the smallest deployment is 0.73 of uniform 8-bit's
        "warm_start": {"fractions": [0.8, 1.0]},
        "n_trials": 4,
    })
    with create_executor("inprocess", spec) as executor:
        runner = StudyRunner.create(spec, optuna.storages.InMemoryStorage(), "warm", executor)
        runner.run()
    first = runner.study.trials[:2]
    assert [t.user_attrs.get(BASELINE_ATTR) for t in first] == ["sensitivity warm start"] * 2
    assert first[0].values[1] < first[1].values[1]  # the smaller budget gave the smaller model
    assert first[1].values[0] > 0.95


def test_a_spec_with_a_prune_knob_warm_starts_with_pruned_allocations():
    spec = parse_spec({
        "task": "digits-cnn",
        "knobs": [{"kind": "bitwidth", "choices": CHOICES}, {"kind": "prune", "low": 0.0, "high": 0.9}],
        "objectives": [{"name": "accuracy"}, {"name": "model_bytes"}],
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "baselines": [2],
        "warm_start": {"fractions": [0.2, 0.4]},
        "deploy": {"mode": DEQUANTIZE_AT_LOAD},  # where pruned zeros cost no bytes
        "n_trials": 3,
    })
    with create_executor("inprocess", spec) as executor:
        runner = StudyRunner.create(spec, optuna.storages.InMemoryStorage(), "warm-prune", executor)
        runner.run()
    uniform2, *warm = runner.study.trials
    assert [t.user_attrs.get(BASELINE_ATTR) for t in warm] == ["sensitivity warm start"] * 2
    # 0.2 of the 8-bit weight bytes (7.7 kB) is below dense uniform 2-bit (9.8 kB): only pruning
    # reaches it by the allocator's size model (which counts no zeros that rounding makes)
    assert any(v > 0 for n, v in warm[0].params.items() if n.startswith("prune:"))
    assert warm[0].values[1] < warm[1].values[1]
    assert warm[0].values[0] > uniform2.values[0] and warm[1].values[0] > 0.95
