"""CPU kernels against the fake-quant reference they stand for.

Tolerances: a kernel that holds the trial's grid exactly (int8 weight-only, fp32 stand-in)
differs from ``x @ W_fakequant.T`` only by fp32 summation order, so ``1e-5`` relative to
the output's scale. W8A8 also rounds each activation to its token's int8 grid: with
``s = max|x_token| / 127`` each input moves by at most ``s / 2``, so output ``j`` moves by
at most ``s / 2 * sum_i |W_ji|`` (plus the same float slack); the test checks that bound
per element, and that it is tight enough to matter (the error is not zero).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from paretoml.objectives.compress.quantize import quantize_tensor
from paretoml.objectives.deploy import kernels_on
from paretoml.objectives.deploy.kernels import build_kernel
from paretoml.objectives.deploy.layer_kernels import restore_layer
from paretoml.objectives.deploy.pack import pack_bits, to_int_weight, unpack_bits
from paretoml.objectives.deploy.sparse import is_semi_structured, semi_structured_mask

CPU = torch.device("cpu")


def _case(bits: int, n: int = 96, k: int = 128, m: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = quantize_tensor(torch.randn(n, k, generator=g), bits)
    bias = torch.randn(n, generator=g)
    x = torch.randn(m, k, generator=g) * 3
    return weight, bias, x, nn.functional.linear(x, weight, bias)


def test_cpu_offers_the_int8_kernels():
    assert {"fp32", "int8-dynamic", "int8-weight-only"} <= kernels_on(CPU)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_integer_weights_are_recovered_exactly_from_the_fake_quantized_ones(bits):
    weight, *_ = _case(bits)
    weight[3] = 0  # an all-zero row keeps a zero scale
    iw = to_int_weight(weight, bits)
    assert iw.q.abs().max() == 2 ** (bits - 1) - 1
    assert torch.equal(iw.dequantize(), weight)
    assert torch.equal(unpack_bits(pack_bits(iw.q, bits), bits, iw.q.numel()).reshape(iw.q.shape), iw.q)
    assert pack_bits(iw.q, bits).numel() == -(-iw.q.numel() * bits // 8)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_int8_weight_only_matches_fake_quant(bits):
    weight, bias, x, ref = _case(bits)
    layer = build_kernel("int8-weight-only", weight, bias, bits, CPU)
    out = layer(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_int8_dynamic_is_within_the_activation_rounding_bound():
    weight, bias, x, ref = _case(8)
    layer = build_kernel("int8-dynamic", weight, bias, 8, CPU)
    out = layer(x.reshape(2, 12, -1)).reshape(24, -1)  # leading dims are kept
    step = x.abs().amax(dim=1, keepdim=True) / 127
    bound = step / 2 * weight.abs().sum(dim=1)[None, :] + 1e-5 * ref.abs().max()
    err = (out - ref).abs()
    assert (err <= bound).all()
    assert err.max() > 0  # activations really were quantized
    assert err.max() < 0.05 * ref.abs().max()


def test_int4_weight_only_packing_matches_fake_quant():
    weight, bias, x, ref = _case(4, n=64, k=256)
    layer = build_kernel("int4-weight-only", weight, bias, 4, CPU)  # tinygemm's CPU variant
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    # a strided view (attention's transposed activations): tinygemm on the CPU needs dense rows
    strided = x.t().contiguous().t()
    assert not strided.is_contiguous()
    torch.testing.assert_close(layer(strided), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    # rebuilt from its own buffers (a runtime export): the very same layer
    again = restore_layer("int4-weight-only", dict(layer.named_buffers()))
    assert again.group == layer.group and torch.equal(again(x), layer(x))


def test_two_four_mask_keeps_the_two_largest_of_every_four():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, 1.0, 1.0]])
    mask = semi_structured_mask(w)
    assert mask.tolist() == [[False, True, True, False, False, False, True, True]]
    big = torch.randn(32, 64)
    assert is_semi_structured(big * semi_structured_mask(big))
    assert not is_semi_structured(big)
    with pytest.raises(ValueError, match="multiple of 4"):
        semi_structured_mask(torch.randn(2, 6))
