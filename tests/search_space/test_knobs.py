import math

import pytest
from pydantic import TypeAdapter, ValidationError

from paretoml.search_space.knobs import (
    BatchSizeKnob,
    BitwidthKnob,
    Knob,
    LayerSelector,
    PruneKnob,
    scaled_learning_rate,
)

KNOB = TypeAdapter(Knob)


@pytest.mark.parametrize(
    ("rule", "batch", "expected"),
    [
        ("none", 128, 0.1),
        ("linear", 128, 0.4),
        ("linear", 16, 0.05),
        ("sqrt", 128, 0.2),
        ("sqrt", 8, 0.05),
    ],
)
def test_lr_scaling_rules_give_documented_values(rule, batch, expected):
    # base 0.1 at batch 32: linear x4 at 128 (Goyal et al.), sqrt x2 at 128
    assert math.isclose(scaled_learning_rate(0.1, batch, 32, rule), expected, rel_tol=1e-12)


def test_bits_outside_supported_set_are_rejected():
    with pytest.raises(ValidationError, match=r"bits \[1, 9\] not supported"):
        BitwidthKnob(choices=[1, 4, 9])


def test_prune_ratio_out_of_range_is_rejected():
    with pytest.raises(ValidationError, match="0 <= low < high <= 0.95"):
        PruneKnob(low=0.0, high=0.99)


def test_batch_sizes_must_be_powers_of_two():
    with pytest.raises(ValidationError, match="powers of two"):
        BatchSizeKnob(choices=[16, 24])


def test_discriminated_union_reports_the_kind_and_field():
    with pytest.raises(ValidationError) as info:
        KNOB.validate_python({"kind": "bitwidth", "choice": [4]})
    assert info.value.errors()[0]["loc"] == ("bitwidth", "choice")


def test_layer_selector_filters_by_kind_and_regex():
    sel = LayerSelector(kinds=["conv"], exclude=r"^conv1$")
    assert sel.matches("conv2", "conv")
    assert not sel.matches("conv1", "conv")
    assert not sel.matches("fc1", "linear")
    with pytest.raises(ValidationError, match="regular expression"):
        LayerSelector(include="(")
