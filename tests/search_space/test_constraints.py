from dataclasses import replace

import pytest

from paretoml.objectives.measure import packed_model_bytes
from paretoml.search_space.constraints import (
    MeanBitsBudget,
    ModelBytesBudget,
    constraint_values,
    estimate_model_bytes,
    mean_bits,
)
from paretoml.search_space.knobs import BitwidthKnob, PruneKnob
from paretoml.search_space.space import JointSpace


@pytest.mark.parametrize("method", ["unstructured", "structured"])
@pytest.mark.parametrize(("bits", "prune"), [(8, 0.0), (4, 0.5), (2, 0.75), (16, 0.25)])
def test_estimate_matches_bytes_counted_on_the_compressed_model(digits_evaluator, method, bits, prune):
    ev = digits_evaluator
    space = JointSpace([BitwidthKnob(choices=[2, 4, 8, 16]), PruneKnob(method=method, high=0.75)], ev.layers)
    config = space.config_from_params(space.uniform_params(bits=bits, prune=prune))
    estimate = estimate_model_bytes(ev.layers, config, ev.other_params)
    # before rounding, the only zeros are the pruned ones: the count is exact
    unrounded, _ = ev.build(replace(config, bits={}))
    assert estimate == packed_model_bytes(unrounded, config.bits)
    # rounding to few bits can zero more weights, which the packed format also saves
    model, _ = ev.build(config)
    assert packed_model_bytes(model, config.bits) <= estimate


def test_constraint_values_are_negative_when_feasible(digits_evaluator):
    ev = digits_evaluator
    space = JointSpace([BitwidthKnob(choices=[4, 8])], ev.layers)
    config = space.config_from_params(space.uniform_params(bits=4))
    assert mean_bits(ev.layers, config) == 4
    size = estimate_model_bytes(ev.layers, config, ev.other_params)
    values = constraint_values(
        [ModelBytesBudget(max_bytes=size + 10), MeanBitsBudget(max_bits=3.5)], ev.layers, config, ev.other_params
    )
    assert values == [-10.0, 0.5]
