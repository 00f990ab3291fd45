"""The KV-cache knob: keys and values apart, or a list of allowed pairs, per attention layer."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.knobs import KVBitsKnob
from paretoml.search_space.space import JointSpace, TrialConfig

LAYERS = [LayerInfo(f"model.layers.{i}.self_attn.{p}", "linear", "Linear", (8, 8), 64, 64, 8)
          for i in range(3) for p in ("q_proj", "k_proj", "v_proj")]
KEYS = [f"model.layers.{i}.self_attn.k_proj" for i in range(3)]


def test_keys_and_values_are_searched_apart() -> None:
    space = JointSpace([KVBitsKnob(key_choices=[4, 8], value_choices=[2, 4, 16])], LAYERS)
    assert space.param_names == [f"{p}{k}" for k in KEYS for p in ("kbits:", "vbits:")]
    assert space.kv_layers == KEYS
    params = dict(space.uniform_params(kv=(8, 2)))
    params[f"vbits:{KEYS[1]}"] = 16
    config = space.config_from_params(params)
    assert config.kv_bits == {KEYS[0]: (8, 2), KEYS[1]: (8, 16), KEYS[2]: (8, 2)}
    assert TrialConfig.from_dict(config.to_dict()) == config
    assert space.uniform_params() == {n: (8 if n.startswith("kbits") else 16) for n in space.param_names}


def test_pairs_restrict_each_layer() -> None:
    space = JointSpace([KVBitsKnob(pairs=["K8V4", "k4v2", "K16V16"])], LAYERS)
    assert space.distributions[f"kv:{KEYS[0]}"].choices == ("K8V4", "K4V2", "K16V16")
    assert space.config_from_params(space.uniform_params(kv=(4, 2))).kv_bits == {k: (4, 2) for k in KEYS}
    assert space.uniform_params() == {f"kv:{k}": "K16V16" for k in KEYS}  # the widest pair
    with pytest.raises(ValueError, match="K2V2"):
        space.uniform_params(kv=(2, 2))
    set_one = space.with_layer_kv(space.uniform_params(), {KEYS[2]: (8, 4)})
    assert space.config_from_params(set_one).kv_bits[KEYS[2]] == (8, 4)
    assert space.kv_pairs() == [(16, 16), (8, 4), (4, 2)]


def test_a_shared_knob_is_one_parameter() -> None:
    space = JointSpace([KVBitsKnob(pairs=["K8V8", "K4V4"], group="shared")], LAYERS)
    assert len(space.param_names) == 1
    assert space.config_from_params({space.param_names[0]: "K4V4"}).kv_bits == {k: (4, 4) for k in KEYS}


@pytest.mark.parametrize("bad", [{"key_choices": [3]}, {"value_choices": []}, {"pairs": ["K8"]},
                                 {"pairs": ["K6V4"]}, {"pairs": ["K8V4", "K8V4"]}, {"pairs": []}])
def test_bad_kv_knobs_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        KVBitsKnob(**bad)
