"""Trials measured on the deployable model: which kernels ran, and what the provenance says."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from paretoml.objectives.deploy import (
    NoKernelError,
    deployable,
    export_compressed,
    kernel_choices,
    kernels_on,
    load_deployment,
    plan_layers,
    resident_bytes,
)
from paretoml.objectives.deploy.export import weights_file_bytes
from paretoml.objectives.deploy.formats import LayerFormat, own_kernel, own_kernels
from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
from paretoml.objectives.measure import LatencySettings
from paretoml.objectives.tasks.registry import create_task
from paretoml.search_space.deploy_mode import DEQUANTIZE_AT_LOAD, DeployMode
from paretoml.search_space.knobs import ActivationBitsKnob, BitwidthKnob, PruneKnob
from paretoml.search_space.space import JointSpace

CPU = torch.device("cpu")
#: the kernel that runs int8 weight-only here (torchao's where it runs, else ours)
W8_KERNEL = own_kernel(LayerFormat("linear", 8), CPU, kernels_on(CPU))


@pytest.fixture(scope="module")
def evaluator() -> TrialEvaluator:
    settings = MeasureSettings(latency=LatencySettings(batch_size=8, warmup=2, repeats=5))
    return TrialEvaluator(create_task("synthetic", {"width": 64}), settings)


def space_knobs() -> list:
    return [BitwidthKnob(choices=[4, 8, 16]), ActivationBitsKnob(), PruneKnob(method="2:4")]


def _space(evaluator: TrialEvaluator) -> JointSpace:
    return JointSpace(space_knobs(), evaluator.layers)


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


def test_runtime_mode_never_runs_a_layer_in_a_wider_format(evaluator):
    """Issue 24: in runtime mode a layer runs only in a kernel of its own format; a format
    with none for the layer's shape is an error (the space does not offer it)."""
    space = _space(evaluator)
    for bits in (8, 16):
        config = space.config_from_params(space.uniform_params(bits=bits))
        for plan in plan_layers(evaluator.model, config, CPU):
            assert plan.kernel in own_kernels(plan.format, CPU, kernels_on(CPU)), plan
            assert plan.native
    four_bit = space.config_from_params(space.uniform_params(bits=4))  # 64x16 and 4x64: no int4 tile fits
    with pytest.raises(NoKernelError, match="layer 0 .w4 linear, weight 64x16. has no kernel of its own format"):
        plan_layers(evaluator.model, four_bit, CPU)
    w4a8 = space.config_from_params({**space.uniform_params(bits=4), "abits:0": 8})
    with pytest.raises(NoKernelError):  # the int8 GEMM holds its values, but it is a wider format
        plan_layers(evaluator.model, w4a8, CPU)


def test_the_space_offers_only_formats_with_a_kernel_and_lists_the_rest(evaluator):
    space = _space(evaluator)
    allowed = kernel_choices(evaluator.model, space.layer_choices(), CPU)
    assert allowed["bits"] == {"0": [8, 16], "2": [8, 16]}  # no int4 tile fits 64x16 or 4x64
    assert allowed["act_bits"] == {"0": [8, 16], "2": [8, 16]}  # W8A8 runs in int8-dynamic
    assert allowed["sparse_2_4"] == {"0": [0.0], "2": [0.0]}  # no 2:4 kernel on the CPU
    built = JointSpace(space_knobs(), evaluator.layers, allowed=allowed)
    assert built.dropped == {"bits:0": [4], "bits:2": [4], "prune:0": [0.5], "prune:2": [0.5]}
    assert built.dropped_line("cpu") == ("choices with no kernel of their own format on cpu, not offered: "
                                         "bits:0 4; bits:2 4; prune:0 0.5; prune:2 0.5")
    assert built.uniform_params(bits=4)["bits:0"] == 8  # a baseline takes the narrowest kept choice above
    assert allowed["a8_bits"] == {"0": [8], "2": [8]}
    # W16A8 has no kernel: a layer drawn so runs float activations, so every trial deploys
    drawn = built.config_from_params({**built.uniform_params(bits=16), "abits:0": 8, "bits:2": 8, "abits:2": 8})
    assert drawn.act_bits == {"2": 8}
    assert [p.kernel for p in plan_layers(evaluator.model, drawn, CPU)] == ["fp32", "int8-dynamic"]
    # emulation and dequantize-at-load run every format: nothing is dropped
    for mode in (DeployMode(emulate=True), DeployMode(DEQUANTIZE_AT_LOAD)):
        assert kernel_choices(evaluator.model, space.layer_choices(), CPU, mode) == space.layer_choices()


def test_emulated_formats_run_in_the_narrowest_kernel_holding_them(evaluator):
    """emulate: true keeps formats without a kernel: bytes of what runs, latency estimated."""
    emulating = TrialEvaluator(create_task("synthetic", {"width": 64}),
                               MeasureSettings(latency=LatencySettings(batch_size=8, warmup=2, repeats=5),
                                               deploy=DeployMode(emulate=True)))
    space = _space(emulating)
    four_bit = space.config_from_params(space.uniform_params(bits=4))
    result = emulating.evaluate(four_bit, ["latency_ms", "model_bytes"])
    assert result.provenance["latency_ms"]["how"] == "estimated"
    assert f"0 (w4 linear) in {W8_KERNEL};" in result.provenance["latency_ms"]["detail"]
    model, _ = emulating.build(four_bit)
    ran = deployable(model, four_bit, CPU, deploy=DeployMode(emulate=True))
    assert [p.kernel for p in ran.layers] == [W8_KERNEL, W8_KERNEL]
    # the bytes are the int8 kernel's (1 byte a weight + fp32 row scales + fp32 bias), not 4-bit packing
    assert result.values["model_bytes"] == resident_bytes(ran.model) == (
        (64 * 16 + 4 * 64 + 4 * 64) + (4 * 64 + 4 * 4 + 4 * 4))
    w4a8 = space.config_from_params({**space.uniform_params(bits=4), "abits:0": 8})
    kernels = emulating.evaluate(w4a8, ["latency_ms"]).attrs["kernels"]
    assert kernels["0"] == {"format": "w4a8", "own_kernel": None, "kernel": "int8-dynamic"}
    sparse = space.config_from_params({**space.uniform_params(bits=16), "prune:0": 0.5})
    weight = emulating.build(sparse)[0].get_submodule("0").weight
    assert int((weight != 0).sum()) == weight.numel() // 2  # its weights really are 2:4
    result = emulating.evaluate(sparse, ["latency_ms"])
    assert result.provenance["latency_ms"]["how"] == "estimated"
    assert result.attrs["kernels"]["0"]["format"] == "w16 2:4"


def test_dequantize_at_load_counts_the_file_and_measures_the_expanded_model(evaluator, tmp_path):
    """model_bytes is the packed file's weight bytes; the model timed and measured is the
    float model the file expands to."""
    expanding = TrialEvaluator(create_task("synthetic", {"width": 64}),
                               MeasureSettings(latency=LatencySettings(batch_size=8, warmup=2, repeats=5),
                                               deploy=DeployMode(DEQUANTIZE_AT_LOAD)))
    space = _space(expanding)
    config = space.config_from_params(space.uniform_params(bits=4))
    result = expanding.evaluate(config, ["latency_ms", "model_bytes", "peak_memory_bytes"])
    assert result.provenance["latency_ms"]["how"] == "measured"
    assert {k["kernel"] for k in result.attrs["kernels"].values()} == {"fp32"}
    model, _ = expanding.build(config)
    export_compressed(model, config, tmp_path, task="synthetic", task_options={"width": 64},
                      deploy=DeployMode(DEQUANTIZE_AT_LOAD))
    size, header = weights_file_bytes(tmp_path)
    assert result.values["model_bytes"] == size - header
    expanded = load_deployment(tmp_path)
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert resident_bytes(expanded.model) == fp32_bytes > result.values["model_bytes"]
    assert result.values["peak_memory_bytes"] >= fp32_bytes  # resident memory: the expanded model's


def test_the_uncompressed_reference_is_measured_in_fp32(evaluator):
    ref = evaluator.reference(["latency_ms", "fidelity"])
    assert ref.provenance["latency_ms"]["how"] == "measured"
    assert ref.values["fidelity"] == 1.0
