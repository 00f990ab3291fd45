"""Export -> load -> evaluate reproduces the trial; the file is the size the trial counted."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from pydantic import ValidationError

from paretoml.objectives.deploy import deployable, export_compressed, load_deployment, read_manifest
from paretoml.objectives.deploy.export import weights_file_bytes
from paretoml.objectives.deploy.formats import LayerFormat, kernels_on, own_kernel
from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
from paretoml.objectives.measure import LatencySettings
from paretoml.objectives.tasks.registry import create_task
from paretoml.search_space.constraints import ModelBytesBudget, constraint_values, needs_measurement
from paretoml.search_space.deploy_mode import DEQUANTIZE_AT_LOAD, DeployMode
from paretoml.search_space.knobs import ActivationBitsKnob, BitwidthKnob, PruneKnob
from paretoml.search_space.model_bytes import channels_to_remove
from paretoml.search_space.space import JointSpace

OPTIONS = {"width": 64}
#: the kernel that runs int8 weight-only on the CPU (torchao's where it runs, else ours)
W8_KERNEL = own_kernel(LayerFormat("linear", 8), torch.device("cpu"), kernels_on(torch.device("cpu")))


@pytest.fixture(scope="module")
def evaluator() -> TrialEvaluator:
    settings = MeasureSettings(latency=LatencySettings(batch_size=8, warmup=1, repeats=3))
    return TrialEvaluator(create_task("synthetic", OPTIONS), settings)


CASES = {
    "mixed bits, unstructured": ([BitwidthKnob(choices=[3, 8]), PruneKnob(high=0.9, step=0.1)],
                                 {"bits:0": 3, "bits:2": 8, "prune:0": 0.7, "prune:2": 0.2}),
    "w8a8 and 16-bit": ([BitwidthKnob(choices=[8, 16]), ActivationBitsKnob()],
                        {"bits:0": 8, "bits:2": 16, "abits:0": 8, "abits:2": 16}),
    "structured + 2-bit": ([BitwidthKnob(choices=[2, 4]), PruneKnob(method="structured", high=0.5, step=0.25)],
                           {"bits:0": 2, "bits:2": 4, "prune:0": 0.5}),
    "16-bit sparse": ([BitwidthKnob(choices=[16]), PruneKnob(high=0.9, step=0.1)],
                      {"bits:0": 16, "bits:2": 16, "prune:0": 0.9, "prune:2": 0.0}),
}
MODES = {"emulate": DeployMode(emulate=True), "dequantize-at-load": DeployMode(DEQUANTIZE_AT_LOAD)}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", list(CASES))
def test_export_load_evaluate_gives_the_trials_values(evaluator, tmp_path, case, mode):
    """Every format (emulated where the CPU has no kernel of its own): the file is the
    trial's model_bytes exactly, and the reloaded model runs the trial's kernels."""
    knobs, params = CASES[case]
    deploy_mode = MODES[mode]
    ev = TrialEvaluator(evaluator.task, replace(evaluator.settings, deploy=deploy_mode))
    space = JointSpace(knobs, ev.layers)
    config = space.config_from_params(params)
    trial = ev.evaluate(config, ["fidelity", "model_bytes"], seed=7, number=3)
    model, _ = ev.build(config, seed=7, number=3)
    manifest = export_compressed(model, config, tmp_path, task="synthetic", task_options=OPTIONS,
                                 objectives=trial.values, provenance=trial.provenance, study="s", trial=3,
                                 deploy=deploy_mode)
    loaded = load_deployment(tmp_path)  # the architecture comes from the manifest's task
    assert ev.score(loaded.model, ["fidelity"])["fidelity"] == trial.values["fidelity"]
    # same kernels, same weights: the very same outputs as the trial's deployable model
    expected = deployable(model, config, "cpu", deploy=deploy_mode).model(ev.bundle.val_inputs)
    assert torch.equal(loaded.model(ev.bundle.val_inputs), expected)
    assert [p.kernel for p in loaded.layers] == [layer.kernel for layer in manifest.layers]
    assert {p.name: p.kernel for p in loaded.layers} == {n: k["kernel"] for n, k in trial.attrs["kernels"].items()}
    size, header = weights_file_bytes(tmp_path)
    assert size - header == trial.values["model_bytes"]


@pytest.fixture(scope="module")
def digits() -> TrialEvaluator:
    settings = MeasureSettings(latency=LatencySettings(batch_size=8, warmup=1, repeats=3))
    return TrialEvaluator(create_task("digits-cnn"), settings)


DIGITS_KNOBS = [BitwidthKnob(choices=[2, 4, 8, 16]), PruneKnob(method="structured", high=0.5, step=0.125)]
#: name -> (params over the digits CNN (conv1, conv2, fc1, fc2), deployment)
DIGITS_CASES = {
    "8-bit": ({"bits:conv1": 16, "bits:conv2": 16, "bits:fc1": 8, "bits:fc2": 8}, DeployMode()),
    "4-bit": ({"bits:conv1": 16, "bits:conv2": 16, "bits:fc1": 4, "bits:fc2": 8}, DeployMode()),
    "2-bit": ({"bits:conv1": 2, "bits:conv2": 2, "bits:fc1": 2, "bits:fc2": 2}, DeployMode(emulate=True)),
    "pruned": ({"bits:conv1": 16, "bits:conv2": 16, "bits:fc1": 4, "bits:fc2": 8,
                "prune:conv2": 0.5, "prune:fc1": 0.375}, DeployMode()),
}


@pytest.mark.parametrize("case", list(DIGITS_CASES))
def test_model_bytes_is_the_export_less_its_header_and_the_budget_uses_it(digits, tmp_path, case):
    """Issue 24: 2, 4, 8 bits and pruned; export -> load gives the kernels the trial ran."""
    params, deploy_mode = DIGITS_CASES[case]
    ev = TrialEvaluator(digits.task, replace(digits.settings, deploy=deploy_mode))
    space = JointSpace(DIGITS_KNOBS, ev.layers)
    config = space.config_from_params({**space.uniform_params(prune=0.0), **params})
    trial = ev.evaluate(config, ["accuracy", "model_bytes", "latency_ms"])
    recorded = {n: k["kernel"] for n, k in trial.attrs["kernels"].items()}
    model, _ = ev.build(config)
    export_compressed(model, config, tmp_path, task="digits-cnn", deploy=deploy_mode, kernels=recorded,
                      objectives=trial.values)
    size, header = weights_file_bytes(tmp_path)
    assert size - header == trial.values["model_bytes"]
    loaded = load_deployment(tmp_path)
    assert {p.name: p.kernel for p in loaded.layers} == recorded
    assert torch.equal(loaded.model(ev.bundle.val_inputs), deployable(model, config, "cpu", deploy=deploy_mode,
                                                                     kernels=recorded).model(ev.bundle.val_inputs))
    if deploy_mode.strict:
        assert trial.provenance["latency_ms"]["how"] == "measured"
        assert set(recorded.values()) <= {"fp32", W8_KERNEL, "int4-weight-only"}
    budget = ModelBytesBudget(max_bytes=10_000)
    assert needs_measurement([budget], deploy_mode) == ["model_bytes"]  # resident bytes: what runs
    assert constraint_values([budget], ev.layers, config, ev.other_params, trial.values) == [
        trial.values["model_bytes"] - 10_000]


def test_structured_pruning_keeps_rows_the_int4_kernel_can_take(digits):
    """Last time 15 digits trials failed: CPU int4 takes rows in sixteens. Kept rows are
    rounded up to the kernel's tile, so every ratio of the knob deploys."""
    ev = TrialEvaluator(digits.task, digits.settings)
    space = JointSpace(DIGITS_KNOBS, ev.layers)
    for ratio in (0.125, 0.25, 0.375, 0.5):
        config = space.config_from_params({**space.uniform_params(prune=0.0), "bits:conv1": 16, "bits:conv2": 16,
                                           "bits:fc1": 4, "bits:fc2": 8, "prune:fc1": ratio, "prune:conv2": ratio})
        model, _ = ev.build(config)
        fc1 = model.get_submodule("fc1").weight
        assert fc1.shape[0] % 16 == 0 and fc1.shape[1] % 32 == 0, (ratio, tuple(fc1.shape))
        kernels = {p.name: p.kernel for p in deployable(model, config, "cpu").layers}
        assert kernels["fc1"] == "int4-weight-only"
    assert channels_to_remove(64, 0.375, multiple=16) == 16  # 40 kept rows -> 48
    assert channels_to_remove(64, 0.375) == 24


def _export_uniform(evaluator, bits: int, out) -> torch.nn.Module:
    """The evaluator's model at uniform ``bits``, exported packed (dequantize-at-load) into ``out``."""
    space = JointSpace([BitwidthKnob(choices=[bits])], evaluator.layers)
    config = space.config_from_params(space.uniform_params(bits=bits))
    model, _ = evaluator.build(config)
    export_compressed(model, config, out, task="synthetic", task_options=OPTIONS,
                      deploy=DeployMode(DEQUANTIZE_AT_LOAD))
    return model


def test_a_version_1_export_still_loads(evaluator, tmp_path):
    model = _export_uniform(evaluator, 3, tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())
    for key in ("deploy_mode", "emulate"):
        data.pop(key)
    data["format_version"] = 1
    for layer in data["layers"]:
        layer["kernel"] = "fp32"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    loaded = load_deployment(tmp_path)  # re-planned: each layer in the narrowest kernel holding it
    assert [p.kernel for p in loaded.layers] == [W8_KERNEL, W8_KERNEL]
    assert torch.allclose(loaded.model(evaluator.bundle.val_inputs), model(evaluator.bundle.val_inputs), atol=1e-4)


def test_manifest_validates_and_rejects_a_damaged_one(evaluator, tmp_path):
    _export_uniform(evaluator, 4, tmp_path)
    manifest = read_manifest(tmp_path)
    assert manifest.task == "synthetic" and manifest.config["bits"] == {"0": 4, "2": 4}
    assert [(l.name, l.weight_bits, l.storage) for l in manifest.layers] == [("0", 4, "packed"), ("2", 4, "packed")]
    assert manifest.paretoml_version and manifest.torch_version == torch.__version__
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["layers"][0]["nnz"] = -1
    data["surprise"] = True
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ValidationError) as info:
        read_manifest(tmp_path)
    assert {e["loc"][0] for e in info.value.errors()} == {"layers", "surprise"}
