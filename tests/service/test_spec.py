from pathlib import Path

import pytest

from paretoml.service.spec import SpecError, load_spec, parse_spec

STUDIES = Path(__file__).resolve().parents[2] / "studies"

BASE = {
    "task": "digits-cnn",
    "knobs": [{"kind": "bitwidth"}],
    "objectives": [{"name": "accuracy"}, {"name": "model_bytes"}],
    "n_trials": 5,
}


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_load(path):
    spec = load_spec(path)
    assert spec.n_trials >= 1 and spec.directions


def test_defaults_and_directions():
    spec = parse_spec(BASE)
    assert spec.directions == ["maximize", "minimize"]
    assert spec.sampler.name == "tpe"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"task": "imagenet"}, "task: unknown task 'imagenet'; available: causal-lm, digits-cnn, digits-merge"),
        ({"knobs": [{"kind": "bitwidth", "choices": [4, 9]}]}, "knobs.0.bitwidth.choices: bits [9] not supported"),
        ({"knobs": [{"kind": "prune", "high": 1.5}]}, "knobs.0.prune: prune ratio range [0.0, 1.5]"),
        ({"knobs": [{"kind": "quantum"}]}, "knobs.0: Input tag 'quantum' found using 'kind' does not match"),
        ({"objectives": [{"name": "speed"}]}, "objectives.0.name: unknown objective 'speed'"),
        ({"sampler": {"name": "magic"}}, "sampler: unknown sampler 'magic'; available: gp, nsga2, random, tpe, xgboost, zeroth-order"),
        ({"sampler": {"name": "tpe", "options": {"gamma": "x"}}}, "sampler: sampler 'tpe' has no option 'gamma'"),
        ({"task_options": {"epochs": 0}}, "task_options: epochs: Input should be greater than or equal to 1"),
        ({"n_trials": 0}, "n_trials: Input should be greater than or equal to 1"),
        ({"deploy": {"mode": "fast"}}, "deploy.mode: Input should be 'runtime' or 'dequantize-at-load'"),
        ({"deploy": {"mode": "dequantize-at-load", "emulate": True}},
         "deploy.emulate: applies to mode runtime only, not dequantize-at-load"),
        ({"knobs": [{"kind": "bitwidth", "choices": [2, 3, 5]}], "baselines": [8, 4]},
         "baselines: baseline bits [8, 4] are not among the choices [2, 3, 5] of the bitwidth knob knobs.0"),
        ({"knobs": [{"kind": "bitwidth", "choices": [4, 8]}, {"kind": "bitwidth", "choices": [2, 8]}],
          "baselines": [8, 4]}, "baselines: baseline bits [4] are not among the choices [2, 8] of the bitwidth knob knobs.1"),
        ({"knobs": [{"kind": "prune"}], "baselines": [8]}, "baselines: uniform-bitwidth baselines need a bitwidth knob"),
        ({"knobs": [{"kind": "prune"}], "warm_start": {"method": "sensitivity"}}, "warm_start: the sensitivity warm start"),
        ({"knobs": [{"kind": "bitwidth", "choices": [4, 8]}, {"kind": "bitwidth", "choices": [8]}],
          "warm_start": {"method": "sensitivity"}}, "warm_start: the warm start allocates bits from the first"),
    ],
)
def test_bad_fields_give_one_line_naming_the_field(change, expected):
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, **change})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(expected), message


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml is not valid YAML"):
        load_spec(bad)
    as_json = tmp_path / "spec.json"
    as_json.write_text('{"task": "digits-cnn"')
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(as_json)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(listy)
    for name, content in (("latin1.yaml", "task: digits-cnn  # caf\u00e9\n".encode("latin-1")),
                          ("utf16.json", '{"task": "digits-cnn"}'.encode("utf-16"))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SpecError, match=f"^{name} is not UTF-8 text: byte 0x[0-9a-f]{{2}} at offset"):
            load_spec(tmp_path / name)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"n_trials": True}, "n_trials"),
        ({"n_trials": "5"}, "n_trials"),
        ({"seed": 1.0}, "seed"),
        ({"finetune": {"learning_rate": "0.01"}}, "finetune.learning_rate"),
        ({"finetune": {"learning_rate": False}}, "finetune.learning_rate"),
        ({"knobs": [{"kind": "float", "name": "x", "low": 0, "high": 1, "log": 1}]}, "knobs.0.float.log"),
    ],
)
def test_types_are_strict_as_the_published_schema_says(change, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec({**BASE, **change})


def test_yaml_exponents_are_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("task: digits-cnn\nknobs: [{kind: bitwidth}]\nobjectives: [{name: accuracy}]\nn_trials: 5\n"
                    "finetune: {steps: 2, learning_rate: 1e-3}\nname: 1e3-run\n")
    spec = load_spec(path)
    assert spec.finetune.learning_rate == 0.001 and spec.name == "1e3-run"
