"""The evaluator sees one task shape, and the system objectives come from one table."""

import typing

import pytest
import torch

from paretoml.search_space.deploy_mode import DeployMode
from paretoml.objectives.evaluate import OBJECTIVES, MeasureSettings, TrialEvaluator
from paretoml.objectives.measure import LatencySettings
from paretoml.objectives.system_objectives import (
    KNOWN_BEFORE_EVALUATION,
    SYSTEM_OBJECTIVES,
    TABLE,
    MeasureContext,
    known_values,
)
from paretoml.objectives.tasks.base import How, ModelBundle, Task
from paretoml.objectives.tasks.classifier import classifier_bundle
from paretoml.objectives.tasks.digits import DigitsCNNTask
from paretoml.search_space.knobs import BitwidthKnob, PruneKnob
from paretoml.search_space.space import JointSpace


class DigitsAsModelBundle(Task):
    """The digits task handing the evaluator its general form itself."""

    name = "digits-as-model-bundle"
    summary = "digits-cnn, loaded as a ModelBundle"

    def load(self, device: torch.device) -> ModelBundle:
        return classifier_bundle(DigitsCNNTask().load(device))


def _evaluators() -> tuple[TrialEvaluator, TrialEvaluator]:
    # emulating: uniform 4 bits puts formats with no CPU kernel on the convolutions
    settings = MeasureSettings(latency=LatencySettings(warmup=1, repeats=2), finetune_steps=5,
                               deploy=DeployMode(emulate=True))
    return TrialEvaluator(DigitsCNNTask(), settings), TrialEvaluator(DigitsAsModelBundle(), settings)


def test_a_model_bundle_task_is_evaluated_like_its_classifier_form():
    """Fine-tuning, merge checkpoints, test accuracy and the labelled metrics come from the
    ModelBundle, so a task that returns that form gets the same trial as the TaskBundle one."""
    torch.manual_seed(0)
    classifier, general = _evaluators()
    assert classifier.bundle is not None and general.bundle is None
    assert general.primary_metric == classifier.primary_metric == "accuracy"
    assert general.n_checkpoints == classifier.n_checkpoints == 0
    space = JointSpace([BitwidthKnob(), PruneKnob(method="structured", high=0.5)], classifier.layers)
    config = space.config_from_params(space.uniform_params(bits=4, prune=0.25))
    names = [n for n in OBJECTIVES if n != "latency_ms"]
    a, b = (ev.evaluate(config, names, seed=3) for ev in (classifier, general))
    assert a.values == b.values and a.provenance == b.provenance
    assert a.attrs["test_accuracy"] == b.attrs["test_accuracy"] and "finetune_s" in b.attrs["timings"]
    assert a.attrs["kernels"] == b.attrs["kernels"] and "metrics" not in a.attrs and "metrics" not in b.attrs


def test_every_system_objective_is_one_table_entry_in_the_provenance_vocabulary(digits_evaluator):
    assert list(SYSTEM_OBJECTIVES) == list(TABLE) == ["latency_ms", "model_bytes", "peak_memory_bytes", "mean_bits"]
    assert all(o.how in typing.get_args(How) for o in SYSTEM_OBJECTIVES.values())
    ev = digits_evaluator
    space = JointSpace([BitwidthKnob(choices=[4])], ev.layers)
    config = space.config_from_params(space.uniform_params(bits=4))
    model, _ = ev.build(config)
    trial = ev.measure(model, config, list(SYSTEM_OBJECTIVES))
    # the rungs obtain the objectives known before evaluation without deploying, as the trial does
    bare = MeasureContext(model, config, ev.layers, ev.device, deploy=ev.settings.deploy)
    assert known_values(bare, list(SYSTEM_OBJECTIVES)) == {n: trial.values[n] for n in KNOWN_BEFORE_EVALUATION}
    assert known_values(bare, ["latency_ms"]) == {}
    with pytest.raises(ValueError, match="deployable model"):
        TABLE["latency_ms"].obtain(bare)
    assert {n: trial.provenance[n]["how"] for n in TABLE} == {
        "latency_ms": "estimated", "model_bytes": "measured", "peak_memory_bytes": "measured", "mean_bits": "estimated"}
    assert "batch 1, 1 thread(s)" in trial.provenance["latency_ms"]["detail"]
