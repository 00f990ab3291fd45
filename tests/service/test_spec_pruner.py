"""The spec's ``pruner`` block: validated like samplers, checked against the study."""

from __future__ import annotations

import pytest

from paretoml.service.spec import SpecError, parse_spec


def spec(**changes) -> dict:
    base = {
        "task": "synthetic",
        "knobs": [{"kind": "bitwidth", "choices": [2, 4, 8]}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
        "finetune": {"steps": 40},
        "n_trials": 4,
    }
    base.update(changes)
    return base


def test_a_valid_pruner_gives_its_rung_steps():
    parsed = parse_spec(spec(pruner={"name": "successive-halving", "options": {"reduction_factor": 2},
                                     "rungs": [0.25, 0.5]}))
    assert parsed.pruner.steps(parsed.finetune.steps) == [10, 20]
    assert parse_spec(spec()).pruner.steps(40) == []  # no pruner: no rungs


def test_rungs_over_evaluation_need_no_fine_tuning_and_give_no_fine_tune_steps():
    parsed = parse_spec(spec(pruner={"name": "median", "over": "evaluation", "rungs": [0.125, 0.25]},
                             finetune={"steps": 0}))
    assert parsed.pruner.over == "evaluation" and parsed.pruner.rungs == [0.125, 0.25]
    assert parsed.pruner.steps(40) == []  # the fine-tune (if any) runs whole
    assert parse_spec(spec(pruner={"name": "median"})).pruner.over == "finetune"  # the default


@pytest.mark.parametrize(("pruner", "changes", "message"), [
    ({"name": "asha"}, {}, "pruner: unknown pruner 'asha'; available: hyperband, median, none, successive-halving"),
    ({"name": "median", "options": {"warmup": 1}}, {}, "pruner: pruner 'median' has no option 'warmup'"),
    ({"name": "wilcoxon"}, {}, "pruner: pruner 'wilcoxon' is single-objective only"),
    ({"name": "median", "rungs": [0.5, 0.25]}, {}, "pruner.rungs: rungs must be a non-empty increasing list"),
    ({"name": "median", "rungs": [1.0]}, {}, "pruner.rungs"),
    ({"name": "median"}, {"finetune": {"steps": 0}}, "pruner: the rungs are points of fine-tuning"),
    ({"name": "median", "over": "validation"}, {}, "pruner.over: Input should be 'finetune' or 'evaluation'"),
    ({"name": "median", "over": "evaluation", "rungs": [0.5, 1.5]}, {}, "pruner.rungs"),
    ({"name": "median", "over": "evaluation"}, {"objectives": [{"name": "model_bytes"}, {"name": "latency_ms"}]},
     "pruner: no objective is measurable at a rung"),
    ({"name": "median"}, {"objectives": [{"name": "model_bytes"}, {"name": "latency_ms"}]},
     "pruner: no objective is measurable at a rung"),
])
def test_bad_pruners_are_one_line_naming_the_field(pruner, changes, message):
    with pytest.raises(SpecError) as info:
        parse_spec(spec(pruner=pruner, **changes))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_searched_learning_rate_range_survives_json_and_the_stored_spec():
    """Pruning studies search the LR; their spec is stored as JSON and parsed again on resume."""
    knobs = [{"kind": "learning_rate", "base_lr_range": [1e-4, 3.0]}]
    parsed = parse_spec(spec(knobs=knobs))
    again = parse_spec(parsed.model_dump(mode="json"))
    assert again.knobs[0].base_lr_range == (1e-4, 3.0)
    with pytest.raises(SpecError, match="base_lr_range"):
        parse_spec(spec(knobs=[{"kind": "learning_rate", "base_lr_range": ["a", 3.0]}]))
