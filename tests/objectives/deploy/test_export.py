"""Export -> load -> evaluate reproduces the trial; the file is the size the trial counted."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from paretoml.objectives.deploy import export_compressed, load_deployment, read_manifest
from paretoml.objectives.deploy.export import weights_file_bytes
from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
from paretoml.objectives.measure import LatencySettings
from paretoml.objectives.tasks.registry import create_task
from paretoml.search_space.knobs import ActivationBitsKnob, BitwidthKnob, PruneKnob
from paretoml.search_space.space import JointSpace

OPTIONS = {"width": 64}


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


@pytest.mark.parametrize("case", list(CASES))
def test_export_load_evaluate_gives_the_trials_values(evaluator, tmp_path, case):
    knobs, params = CASES[case]
    space = JointSpace(knobs, evaluator.layers)
    config = space.config_from_params(params)
    trial = evaluator.evaluate(config, ["fidelity", "model_bytes"], seed=7, number=3)
    model, _ = evaluator.build(config, seed=7, number=3)
    manifest = export_compressed(model, config, tmp_path, task="synthetic", task_options=OPTIONS,
                                 objectives=trial.values, provenance=trial.provenance, study="s", trial=3)
    loaded = load_deployment(tmp_path)  # the architecture comes from the manifest's task
    assert evaluator.score(loaded.model, ["fidelity"])["fidelity"] == trial.values["fidelity"]
    # same kernels, same weights: the very same outputs as the trial's deployable model
    from paretoml.objectives.deploy import deployable

    expected = deployable(model, config, "cpu").model(evaluator.bundle.val_inputs)
    assert torch.equal(loaded.model(evaluator.bundle.val_inputs), expected)
    assert [p.kernel for p in loaded.layers] == [layer.kernel for layer in manifest.layers]
    size, header = weights_file_bytes(tmp_path)
    model_bytes = trial.values["model_bytes"]
    assert abs((size - header) - model_bytes) <= 0.02 * model_bytes, (size, header, model_bytes)


def test_manifest_validates_and_rejects_a_damaged_one(evaluator, tmp_path):
    space = JointSpace([BitwidthKnob(choices=[4])], evaluator.layers)
    config = space.config_from_params(space.uniform_params(bits=4))
    model, _ = evaluator.build(config)
    export_compressed(model, config, tmp_path, task="synthetic", task_options=OPTIONS)
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
