import pytest
import torch

from paretoml.objectives.compress.quantize import quantize_model, quantize_tensor


@pytest.fixture
def weight():
    return torch.randn(64, 32, 3, 3, generator=torch.Generator().manual_seed(0))


def test_error_falls_as_bits_rise(weight):
    errors = [torch.linalg.norm(quantize_tensor(weight, b) - weight).item() for b in range(2, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # each extra bit roughly halves the error once the grid is fine enough
    assert errors[-1] < errors[2] / 8


def test_16_bits_is_fp16_rounding(weight):
    out = quantize_tensor(weight, 16)
    assert torch.equal(out, weight.half().float())
    assert torch.allclose(out, weight, rtol=2**-10, atol=0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_per_channel_grid_has_at_most_2_levels_plus_one_values(weight, bits):
    out = quantize_tensor(weight, bits)
    levels = 2 ** (bits - 1) - 1
    for row in out.reshape(out.shape[0], -1):
        assert len(torch.unique(row)) <= 2 * levels + 1
    # the largest magnitude of each channel is kept (up to the fp16 scale)
    assert torch.allclose(out.abs().amax(dim=(1, 2, 3)), weight.abs().amax(dim=(1, 2, 3)), rtol=1e-3)


def test_zeros_and_zero_rows_survive():
    w = torch.tensor([[0.0, 0.0], [0.0, 1.0], [-2.0, 0.0]])
    out = quantize_tensor(w, 3)
    assert torch.equal(out == 0, w == 0)  # zeros (pruned weights) stay exactly zero
    assert torch.allclose(out, w, rtol=2**-10)  # the rest is off by the fp16 scale only


def test_bad_bits_rejected(weight):
    with pytest.raises(ValueError, match="bits must be"):
        quantize_tensor(weight, 1)


def test_quantize_model_changes_only_named_layers():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    before = [p.clone() for p in model.parameters()]
    quantize_model(model, {"0": 2})
    after = list(model.parameters())
    assert not torch.equal(before[0], after[0])
    assert torch.equal(before[1], after[1])  # bias untouched
    assert torch.equal(before[2], after[2])
