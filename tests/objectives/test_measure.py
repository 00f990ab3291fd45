import math

import torch
from torch import nn

from paretoml.objectives import measure
from paretoml.objectives.compress.prune import prune_unstructured


def test_packed_bytes_match_a_hand_count():
    model = nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    prune_unstructured(model, {"0": 0.75})  # 30 of 40 weights zeroed, 10 kept
    # layer 0 at 4 bits: dense 40*4=160 bits vs bitmap 40 + 10*4 = 80 bits -> 80; scales 4 rows * 16 bits = 64
    # -> (80 + 64) / 8 = 18 bytes. Its bias: 4 fp32 = 16 bytes.
    # layer 2 at 16 bits: dense 12*16=192 bits, no scales -> 24 bytes.
    assert measure.packed_model_bytes(model, {"0": 4, "2": 16}) == 18 + 16 + 24
    # without knobs everything is fp32: (40 + 4 + 12) * 4
    assert measure.packed_model_bytes(model, {}) == 224 == measure.dense_fp32_bytes(model)


def test_packed_weight_bits_formula():
    assert measure.packed_weight_bits(numel=100, nnz=100, rows=10, bits=8) == 800 + 160
    assert measure.packed_weight_bits(numel=100, nnz=10, rows=10, bits=8) == 100 + 80 + 160
    assert measure.packed_weight_bits(numel=100, nnz=10, rows=10, bits=32) == 3200
    assert measure.packed_weight_bytes(numel=3, nnz=3, rows=1, bits=2) == math.ceil((6 + 16) / 8)


def test_accuracy_and_fidelity():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert measure.accuracy(model, x, torch.tensor([0, 1, 1, 1])) == 0.75
    assert measure.fidelity(model, x, model(x)) == 1.0
    assert measure.fidelity(model, x, -model(x)) == 0.0


def test_latency_is_positive_and_grows_with_work():
    small = nn.Linear(64, 64)
    large = nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)])
    settings = measure.LatencySettings(batch_size=16, warmup=2, repeats=9)
    t_small = measure.latency_ms(small, torch.randn(16, 64), settings)
    t_large = measure.latency_ms(large, torch.randn(16, 512), settings)
    assert 0 < t_small < t_large


def test_peak_memory_counts_parameters_and_activations():
    model = nn.Sequential(nn.Linear(100, 1000), nn.ReLU(), nn.Linear(1000, 10))
    params = sum(p.numel() * 4 for p in model.parameters())
    peak = measure.peak_memory_bytes(model, torch.randn(64, 100))
    # at least the parameters and one 64x1000 fp32 activation; at most a few of them
    assert params + 64 * 1000 * 4 <= peak <= params + 4 * 64 * 1000 * 4
