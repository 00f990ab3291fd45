"""torchao's kernels on the CPU (torch 2.13): those that run hold the trial's values, those
that do not are refused by the probe with one reason; the planner prefers the faster kernel
of a format. Skipped where torchao is not installed (the ``torchao`` extra).

Tolerances as in test_kernels.py: int8 weight-only holds the trial's grid exactly (fp32
summation order only, ``1e-5``); W8A8 moves each activation by at most half its token's
int8 step (torchao's step, ``max|x| / 127.5``, is below ours, so ours bounds it).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("torchao")

from paretoml.objectives.compress.quantize import quantize_model, quantize_tensor  # noqa: E402
from paretoml.objectives.deploy import deployable, kernels_on, plan_layers  # noqa: E402
from paretoml.objectives.deploy import torchao_kernels as T  # noqa: E402
from paretoml.objectives.deploy.convert import build_kernel  # noqa: E402
from paretoml.objectives.deploy.formats import LayerFormat, own_kernel, stand_in_kernels  # noqa: E402
from paretoml.search_space.space import TrialConfig  # noqa: E402

CPU = torch.device("cpu")


def _case(bits: int, n: int = 96, k: int = 128, m: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = quantize_tensor(torch.randn(n, k, generator=g), bits)
    weight[5] = 0  # an all-zero row: a zero scale
    bias = torch.randn(n, generator=g)
    x = torch.randn(m, k, generator=g) * 3
    return weight, bias, x, nn.functional.linear(x, weight, bias)


def test_the_int8_kernels_run_here_and_the_others_are_refused_with_one_reason():
    runs = T.available(CPU, torch.float32)
    assert {T.TORCHAO_INT8_WEIGHT_ONLY, T.TORCHAO_INT8_DYNAMIC} <= runs <= kernels_on(CPU)
    for kernel in (T.TORCHAO_INT4_WEIGHT_ONLY, T.TORCHAO_FP8_ROWWISE):  # CUDA only (tinygemm, sm89+)
        reason = T.probe(kernel, "cpu", torch.float32)
        assert kernel not in runs and kernel not in kernels_on(CPU)
        assert reason and "\n" not in reason and len(reason) < 240


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_int8_weight_only_holds_the_trials_grid_exactly(bits):
    weight, bias, x, ref = _case(bits)
    layer = build_kernel(T.TORCHAO_INT8_WEIGHT_ONLY, weight, bias, bits, CPU)
    assert isinstance(layer, T.TorchaoLinear) and layer.kernel == T.TORCHAO_INT8_WEIGHT_ONLY
    out = layer(x.reshape(4, 6, -1))  # leading dims are kept, the input's dtype comes back
    assert out.shape == (4, 6, 96) and out.dtype == x.dtype
    torch.testing.assert_close(out.reshape(24, -1), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_int8_dynamic_is_within_the_activation_rounding_bound():
    weight, bias, x, ref = _case(8)
    out = build_kernel(T.TORCHAO_INT8_DYNAMIC, weight, bias, 8, CPU)(x)
    step = x.abs().amax(dim=1, keepdim=True) / 127  # ours; torchao's is smaller
    bound = step / 2 * weight.abs().sum(dim=1)[None, :] + 1e-4 * ref.abs().max()
    assert ((out - ref).abs() <= bound).all()
    assert (out - ref).abs().max() > 0  # activations were quantized


def test_the_probe_refuses_everything_without_torchao(monkeypatch):
    monkeypatch.setattr(T, "version", lambda: None)
    T.probe.cache_clear()
    try:
        assert T.available(CPU, torch.float32) == frozenset()
        assert "not installed" in T.probe(T.TORCHAO_INT8_WEIGHT_ONLY, "cpu", torch.float32)
    finally:
        T.probe.cache_clear()


def test_each_format_runs_its_preferred_kernel_of_the_same_format():
    available = kernels_on(CPU)
    w8, w8a8 = LayerFormat("linear", 8), LayerFormat("linear", 8, act_bits=8)
    assert own_kernel(w8, CPU, available) == T.TORCHAO_INT8_WEIGHT_ONLY  # faster on CPU
    assert own_kernel(w8a8, CPU, available) == "int8-dynamic"  # ours faster on CPU
    without = available - {T.TORCHAO_INT8_WEIGHT_ONLY}
    assert own_kernel(w8, CPU, without) == "int8-weight-only"  # where torchao does not run: ours
    assert stand_in_kernels(LayerFormat("linear", 4), CPU, available) == [
        "fp32", T.TORCHAO_INT8_WEIGHT_ONLY, "int8-weight-only"]
    assert T.preferred(["fp8-rowwise", "bf16"], torch.device("cuda")) == [T.TORCHAO_FP8_ROWWISE, "fp8-rowwise",
                                                                           "bf16"]


def test_a_deployed_model_runs_torchao_for_8_bit_weights_and_counts_it_as_native():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32)).eval()
    config = TrialConfig(bits={"0": 8, "2": 8})
    quantize_model(model, config.bits)
    x = torch.randn(5, 64)
    with torch.no_grad():
        ref = model(x)
    deployment = deployable(model, config, CPU)
    assert deployment.kernel_counts() == {T.TORCHAO_INT8_WEIGHT_ONLY: 2} and deployment.all_native
    with torch.no_grad():
        torch.testing.assert_close(deployment.model(x), ref, rtol=1e-5, atol=1e-5)
    # ours of the same format is native too (what the kernel table may pick instead)
    plans = plan_layers(model, config, CPU, available=kernels_on(CPU) - {T.TORCHAO_INT8_WEIGHT_ONLY})
    assert [p.kernel for p in plans] == ["int8-weight-only"] * 2 and all(p.native for p in plans)
