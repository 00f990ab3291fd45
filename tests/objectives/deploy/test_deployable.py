"""Trials measured on the deployable model: which kernels ran, and what the provenance says."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from paretoml.objectives.deploy import deployable
from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
from paretoml.objectives.measure import LatencySettings
from paretoml.objectives.tasks.registry import create_task
from paretoml.search_space.knobs import ActivationBitsKnob, BitwidthKnob, PruneKnob
from paretoml.search_space.space import JointSpace


@pytest.fixture(scope="module")
def evaluator() -> TrialEvaluator:
    settings = MeasureSettings(latency=LatencySettings(batch_size=8, warmup=2, repeats=5))
    return TrialEvaluator(create_task("synthetic", {"width": 64}), settings)


def _space(evaluator: TrialEvaluator) -> JointSpace:
    return JointSpace([BitwidthKnob(choices=[4, 8, 16]), ActivationBitsKnob(),
                       PruneKnob(method="2:4")], evaluator.layers)


def _ops_of_latency_pass(model, batch) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.inference_mode():
            model(batch)
    return {e.name for e in prof.events()}


def test_w8a8_is_timed_by_the_int8_gemm(evaluator):
    space = _space(evaluator)
    params = {**space.uniform_params(bits=8), "abits:0": 8, "abits:2": 8}
    config = space.config_from_params(params)
    assert config.act_bits == {"0": 8, "2": 8}
    result = evaluator.evaluate(config, ["latency_ms", "fidelity", "peak_memory_bytes"])
    assert result.provenance["latency_ms"]["how"] == "measured"
    assert "2x int8-dynamic" in result.provenance["latency_ms"]["detail"]
    assert result.attrs["kernels"]["0"] == {"format": "w8a8", "own_kernel": "int8-dynamic", "kernel": "int8-dynamic"}
    # the pass that latency_ms times runs the integer GEMM, not a float one
    model = deployable(evaluator.build(config)[0], config, "cpu").model
    ops = _ops_of_latency_pass(model, evaluator.bundle.example_input)
    assert "aten::_int_mm" in ops and "aten::linear" not in ops and "aten::addmm" not in ops
    assert result.values["fidelity"] > 0.9


def test_formats_without_a_cpu_kernel_make_latency_estimated(evaluator):
    space = _space(evaluator)
    four_bit = space.config_from_params(space.uniform_params(bits=4))
    result = evaluator.evaluate(four_bit, ["latency_ms"])
    assert result.provenance["latency_ms"]["how"] == "estimated"
    assert "0 (w4 linear) in fp32" in result.provenance["latency_ms"]["detail"]
    # W4A8 runs for real in the int8 GEMM (its values fit), yet its own format has no kernel
    w4a8 = space.config_from_params({**space.uniform_params(bits=4), "abits:0": 8})
    kernels = evaluator.evaluate(w4a8, ["latency_ms"]).attrs["kernels"]
    assert kernels["0"] == {"format": "w4a8", "own_kernel": None, "kernel": "int8-dynamic"}
    # 2:4 sparsity has no CPU kernel either; its weights really are 2:4
    sparse = space.config_from_params({**space.uniform_params(bits=16), "prune:0": 0.5})
    model, _ = evaluator.build(sparse)
    weight = model.get_submodule("0").weight
    assert int((weight != 0).sum()) == weight.numel() // 2
    result = evaluator.evaluate(sparse, ["latency_ms"])
    assert result.provenance["latency_ms"]["how"] == "estimated"
    assert result.attrs["kernels"]["0"]["format"] == "w16 2:4"


def test_the_uncompressed_reference_is_measured_in_fp32(evaluator):
    ref = evaluator.reference(["latency_ms", "fidelity"])
    assert ref.provenance["latency_ms"]["how"] == "measured"
    assert ref.values["fidelity"] == 1.0
