import pytest

from paretoml.objectives.evaluate import OBJECTIVES
from paretoml.search_space.knobs import ActivationBitsKnob, BitwidthKnob, LayerSelector, MergeKnob, PruneKnob
from paretoml.search_space.space import JointSpace, TrialConfig


def test_every_objective_is_measured_with_provenance(digits_evaluator):
    ev = digits_evaluator
    space = JointSpace([BitwidthKnob(), PruneKnob(method="structured", high=0.5)], ev.layers)
    config = space.config_from_params(space.uniform_params(bits=8, prune=0.5))
    result = ev.evaluate(config, list(OBJECTIVES))
    assert set(result.values) == set(OBJECTIVES)
    # (the fixture emulates) 8-bit convolutions have no int8 kernel on the CPU: they run
    # fp32, so latency is estimated; bytes are counted on what ran
    assert {k: v["how"] for k, v in result.provenance.items()} == {
        k: "estimated" if k == "latency_ms" else "measured" if k == "model_bytes" else o.how
        for k, o in OBJECTIVES.items()}
    assert "conv1 (w8 conv) in fp32" in result.provenance["latency_ms"]["detail"]
    linear_w8a8 = JointSpace([BitwidthKnob(layers=LayerSelector(kinds=["linear"])), ActivationBitsKnob(choices=[8])],
                             ev.layers)
    native = ev.evaluate(linear_w8a8.config_from_params(linear_w8a8.uniform_params(bits=8)), ["latency_ms"])
    assert native.provenance["latency_ms"]["how"] == "measured"
    assert "2x int8-dynamic" in native.provenance["latency_ms"]["detail"]
    reference = ev.reference(list(OBJECTIVES))
    assert reference.values["accuracy"] > 0.9  # the trained CNN
    assert result.values["model_bytes"] < reference.values["model_bytes"] / 4
    assert result.values["mean_bits"] == 8 and reference.values["mean_bits"] == 32
    assert 0 < result.attrs["test_accuracy"] <= 1
    # each step's seconds, so a slow study shows where its trials spend their time
    steps = result.attrs["timings"]
    assert {"compress_s", "quantize_s", "deploy_s", "score_s", "latency_s", "measure_s"} <= set(steps)
    assert all(v > 0 for v in steps.values())
    assert steps["score_s"] + steps["latency_s"] <= steps["measure_s"]


def test_the_cached_original_is_never_modified(digits_evaluator):
    ev = digits_evaluator
    before = {k: v.clone() for k, v in ev.bundle.model.state_dict().items()}
    space = JointSpace([BitwidthKnob(choices=[2]), PruneKnob(method="structured", high=0.9)], ev.layers)
    ev.evaluate(space.config_from_params(space.uniform_params(bits=2, prune=0.9)), ["accuracy"])
    after = ev.bundle.model.state_dict()
    assert before.keys() == after.keys()
    assert all((before[k] == after[k]).all() for k in before)


def test_fidelity_of_the_untouched_model_is_one(digits_evaluator):
    assert digits_evaluator.evaluate(TrialConfig(), ["fidelity"]).values["fidelity"] == 1.0


def test_merge_task_specialists_forget_and_merging_recovers(merge_evaluator):
    ev = merge_evaluator
    assert ev.n_checkpoints == 2
    space = JointSpace([MergeKnob(group="shared")], ev.layers, n_checkpoints=2)

    def acc(c0, c1):
        config = space.config_from_params({"merge0:all": c0, "merge1:all": c1})
        return ev.evaluate(config, ["accuracy"]).values["accuracy"]

    specialist_a, specialist_b, blend = acc(1.0, 0.0), acc(0.0, 1.0), acc(0.5, 0.5)
    # each specialist knows about half of the digits; a blend beats both
    assert specialist_a < 0.7 and specialist_b < 0.7
    assert blend > max(specialist_a, specialist_b) + 0.1
    with pytest.raises(KeyError, match="unknown objective"):
        ev.evaluate(TrialConfig(), ["speed"])


def test_evaluation_rungs_score_prefixes_against_a_reference_cut_to_match(digits_evaluator):
    """The uncompressed model agrees with itself on every prefix: a reference not cut to the
    prefix would not even have its shape. Steps are the samples scored; a stop raises."""
    from paretoml.objectives.evaluate import StoppedAtRung, prefix_sizes
    from paretoml.search_space.space import TrialConfig

    total = digits_evaluator.split_samples()
    assert total == len(digits_evaluator.bundle.val_labels)
    seen: list[tuple[int, dict[str, float]]] = []
    result = digits_evaluator.evaluate(TrialConfig(), ["fidelity", "accuracy", "model_bytes"],
                                       evaluation_rungs=[0.25, 0.5],
                                       gate=lambda step, values: seen.append((step, values)) or False)
    assert [s for s, _ in seen] == prefix_sizes([0.25, 0.5], total) == [-(-total // 4), -(-total // 2)]
    assert all(v["fidelity"] == 1.0 and v["model_bytes"] == result.values["model_bytes"] for _, v in seen)
    labels = digits_evaluator.bundle.val_labels
    preds = digits_evaluator.model(digits_evaluator.bundle.val_inputs[: seen[0][0]]).argmax(1)
    assert seen[0][1]["accuracy"] == pytest.approx(float((preds == labels[: seen[0][0]]).float().mean()))
    assert result.attrs["validation_samples"] == total
    steps: list[int] = []
    with pytest.raises(StoppedAtRung) as stop:
        digits_evaluator.evaluate(TrialConfig(bits={"fc1": 2}), ["accuracy"], evaluation_rungs=[0.25, 0.5],
                                  gate=lambda step, values: steps.append(step) or True)
    assert stop.value.step == steps[0] == seen[0][0] and len(steps) == 1
