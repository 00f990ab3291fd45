"""KV-cache warm start: per-layer sensitivity of each pair, and the knapsack over pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator  # noqa: E402
from paretoml.objectives.tasks.causal_lm import CausalLMOptions, CausalLMTask  # noqa: E402
from paretoml.surrogates.kv_sensitivity import (  # noqa: E402
    KVSensitivity,
    allocate_kv,
    kv_warm_start_allocations,
    measure_kv_sensitivity,
)
from tests.objectives.tasks.tiny_llama import tiny_llama_folder  # noqa: E402

BYTES = {(16, 16): 64.0, (8, 8): 36.0, (8, 4): 28.0, (4, 2): 16.0}


def layer(name: str, drops: dict) -> KVSensitivity:
    return KVSensitivity(name, drops, BYTES)


def test_the_allocation_spends_bits_where_the_metric_suffers() -> None:
    sensitive = layer("a", {(16, 16): 0.0, (8, 8): 0.01, (8, 4): 0.2, (4, 2): 0.9})
    robust = layer("b", {(16, 16): 0.0, (8, 8): 0.0, (8, 4): 0.001, (4, 2): 0.002})
    allocation = allocate_kv([sensitive, robust], 36.0 + 16.0)
    assert allocation == {"a": (8, 8), "b": (4, 2)}
    assert allocate_kv([sensitive, robust], 31.0) is None  # below the smallest pairs everywhere
    ladder = kv_warm_start_allocations([sensitive, robust], [0.25, 0.5, 0.75, 1.0])
    assert ladder[0] == {"a": (4, 2), "b": (4, 2)}
    assert all(sum(BYTES[p] for p in a.values()) <= f * 128 for a, f in zip(ladder, [0.25, 0.5, 0.75, 1.0]))


def test_measured_on_a_tiny_llama(tmp_path: Path) -> None:
    options = CausalLMOptions(context=64, n_calibration=2, n_validation=2, n_test=0, n_prompts=0, batch_size=2)
    evaluator = TrialEvaluator(CausalLMTask(options, path=tiny_llama_folder(tmp_path)), MeasureSettings(), "cpu")
    keys = [l.name for l in evaluator.layers if l.name.endswith("k_proj")]
    measured = measure_kv_sensitivity(evaluator, keys, [(16, 16), (8, 8), (2, 2)])
    assert [s.layer for s in measured] == keys
    for s in measured:
        assert s.drop[(16, 16)] == 0.0 and s.drop[(2, 2)] != 0.0
        assert s.bytes_per_token[(2, 2)] < s.bytes_per_token[(8, 8)] < s.bytes_per_token[(16, 16)]


def test_a_model_without_kv_knobs_gets_no_kv_allocations() -> None:
    # the runner asks for KV allocations beside the weight ones on every warm-started study
    assert kv_warm_start_allocations([], (0.25, 0.5, 1.0)) == []
