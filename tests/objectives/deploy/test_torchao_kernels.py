"""torchao's kernels on the CPU (torch 2.13): those that run hold the trial's values, those
that do not are refused by the probe with one reason, and the preference order puts the
faster kernel of a format first; the planner runs W8 in torchao's int8 kernel, and a runtime
export restores it. Skipped where torchao is not installed (the ``torchao`` extra).

Tolerances as in test_kernels.py: int8 weight-only holds the trial's grid exactly (fp32
summation order only, ``1e-5``); W8A8 moves each activation by at most half its token's
int8 step (torchao's step, ``max|x| / 127.5``, is below ours, so ours bounds it).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("torchao")

from paretoml.objectives.compress.quantize import quantize_tensor  # noqa: E402
from paretoml.objectives.deploy import torchao_kernels as T  # noqa: E402

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
    assert {T.TORCHAO_INT8_WEIGHT_ONLY, T.TORCHAO_INT8_DYNAMIC} <= runs
    for kernel in (T.TORCHAO_INT4_WEIGHT_ONLY, T.TORCHAO_FP8_ROWWISE):  # CUDA only (tinygemm, sm89+)
        reason = T.probe(kernel, "cpu", torch.float32)
        assert kernel not in runs
        assert reason and "\n" not in reason and len(reason) < 240


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_int8_weight_only_holds_the_trials_grid_exactly(bits):
    weight, bias, x, ref = _case(bits)
    layer = T.build_torchao(T.TORCHAO_INT8_WEIGHT_ONLY, weight, bias, bits, CPU, torch.float32)
    assert isinstance(layer, T.TorchaoInt8WeightOnlyLinear) and layer.kernel == T.TORCHAO_INT8_WEIGHT_ONLY
    out = layer(x.reshape(4, 6, -1))  # leading dims are kept, the input's dtype comes back
    assert out.shape == (4, 6, 96) and out.dtype == x.dtype
    torch.testing.assert_close(out.reshape(24, -1), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_int8_dynamic_is_within_the_activation_rounding_bound():
    weight, bias, x, ref = _case(8)
    out = T.build_torchao(T.TORCHAO_INT8_DYNAMIC, weight, bias, 8, CPU, torch.float32)(x)
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


def test_the_preference_order_puts_the_faster_kernel_of_a_format_first():
    cpu, cuda = T.preferred(["int8-weight-only", "int8-dynamic"], CPU), T.preferred(["fp8-rowwise", "bf16"], torch.device("cuda"))
    assert cpu.index(T.TORCHAO_INT8_WEIGHT_ONLY) < cpu.index("int8-weight-only")  # faster on CPU
    assert cpu.index("int8-dynamic") < cpu.index(T.TORCHAO_INT8_DYNAMIC)  # ours faster on CPU
    assert cuda == [T.TORCHAO_FP8_ROWWISE, "fp8-rowwise", "bf16"]


def test_the_planner_runs_w8_in_torchaos_kernel_with_our_bytes_and_export_restores_it(tmp_path):
    """Issue 24 item 4: where torchao's int8 weight-only runs, a W8 layer runs in it (not ours,
    1.1-132x slower here), holds the same buffers as ours (so ``model_bytes`` does not move),
    survives a copy and a move, and a runtime export rebuilds that very kernel."""
    import copy

    from paretoml.objectives.deploy import deployable, export_compressed, load_deployment, resident_bytes
    from paretoml.objectives.deploy.export import weights_file_bytes
    from paretoml.objectives.deploy.kernels import build_kernel
    from paretoml.search_space.space import TrialConfig

    weight, bias, x, ref = _case(8)
    model = nn.Sequential(nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, 32))
    with torch.no_grad():
        model[0].weight.copy_(weight)
        model[0].bias.copy_(bias)
        model[2].weight.copy_(quantize_tensor(model[2].weight, 8))
    config = TrialConfig(bits={"0": 8, "2": 8})
    deployed = deployable(model, config, CPU, example=x)
    assert [p.kernel for p in deployed.layers] == [T.TORCHAO_INT8_WEIGHT_ONLY] * 2
    assert all(p.own_kernel == p.kernel for p in deployed.layers)  # measured, not a stand-in
    layer = deployed.model[0]
    ours = build_kernel("int8-weight-only", weight, bias, 8, CPU)
    assert {k: (v.dtype, v.shape) for k, v in layer.state_dict().items()} == \
        {k: (v.dtype, v.shape) for k, v in ours.state_dict().items()}
    assert resident_bytes(layer) == resident_bytes(ours)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
        moved = copy.deepcopy(layer).to(torch.float64).to(torch.float32)  # new buffers: a new view
        torch.testing.assert_close(moved(x), layer(x))
    export_compressed(model, config, tmp_path, task="synthetic", device=CPU)
    loaded = load_deployment(tmp_path, CPU, skeleton=model)
    assert [p.kernel for p in loaded.layers] == [T.TORCHAO_INT8_WEIGHT_ONLY] * 2
    assert isinstance(loaded.model[0], T.TorchaoInt8WeightOnlyLinear)
    size, header = weights_file_bytes(tmp_path)
    assert size - header == resident_bytes(deployed.model)
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), deployed.model(x))
