"""The Python API on a model defined here (not a registered task): in process and on a
2-worker Ray pool, with the model and functions shipped to the workers by value."""

from __future__ import annotations

import functools
import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch import nn

import paretoml
from paretoml.search_space.trial_attrs import CONFIG_ATTR, ERROR_ATTR, PROVENANCE_ATTR, WORKER_ATTR
from paretoml.service.runner import TooManyFailuresError
from paretoml.service.spec import SpecError, parse_spec

_gen = torch.Generator().manual_seed(0)
INPUTS = torch.randn(256, 12, generator=_gen)
LABELS = (INPUTS[:, :3].sum(dim=1) > 0).long() + (INPUTS[:, 3] > 0.5).long()


class TwoTowers(nn.Module):
    """Not traceable by torch.fx (data-dependent branch), and takes keyword inputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.left = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))
        self.right = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 1e9):  # fx cannot trace a branch on a value
            return self.right(x)
        return self.left(x) * scale + self.right(x)


def trained() -> TwoTowers:
    model = TwoTowers()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(INPUTS, torch.ones(1)), LABELS).backward()
        optimizer.step()
    return model.eval()


def accuracy(model: nn.Module) -> dict[str, float]:
    predicted = model(x=INPUTS, scale=torch.ones(1)).argmax(dim=1)
    return {"accuracy": float((predicted == LABELS).float().mean())}


@functools.cache
def _first_layer_output() -> torch.Tensor:
    with torch.inference_mode(False), torch.enable_grad():  # evaluate runs under no_grad
        return trained().left[0](INPUTS).detach()


def flaky(model: nn.Module) -> dict[str, float]:
    """Raises for every model whose first layer was quantized to 2 bits. It reads the layer's
    outputs, as a user's evaluate would: what it is given is the deployed model, whose layers
    are kernels (packed weights, no ``.weight``)."""
    with torch.no_grad():
        error = (model.left[0](INPUTS) - _first_layer_output()).abs().max() / _first_layer_output().abs().max()
    if error > 0.05:  # 8 bits: about 0.005 here; 2 bits: about 0.3
        raise RuntimeError("flaky evaluate: refuses 2-bit models")
    return accuracy(model)


KNOBS = [{"kind": "bitwidth", "choices": [2, 4, 8]},
         {"kind": "prune", "layers": {"include": r"^left\.0$"}, "high": 0.75, "step": 0.25}]


def run(workers: int, tmp_path, evaluate=accuracy, **kwargs) -> optuna.Study:
    return paretoml.search(
        trained(),
        evaluate=evaluate,
        metrics={"accuracy": "maximize"},
        example_inputs={"x": INPUTS[:8], "scale": torch.ones(1)},
        knobs=KNOBS,
        objectives=["accuracy", "model_bytes"],
        n_trials=6,
        baselines=[8],
        storage=f"sqlite:///{tmp_path / 'own.db'}",
        study_name=f"own-{workers}",
        measure={"latency_repeats": 1, "latency_warmup": 0},
        workers=workers,
        **kwargs,
    )


def check(study: optuna.Study) -> None:
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6
    first = complete[0]  # the uniform 8-bit baseline: keeps the trained model's accuracy
    assert first.values[0] == pytest.approx(accuracy(trained())["accuracy"], abs=0.02)
    assert first.values[0] > 0.8
    assert set(first.user_attrs[CONFIG_ATTR]["bits"]) == {"left.0", "left.2", "right"}
    assert first.user_attrs[PROVENANCE_ATTR]["accuracy"]["how"] == "measured"
    assert any(t.user_attrs[CONFIG_ATTR]["prune"].get("left.0", 0) > 0 for t in complete)
    # the study is a plain Optuna study in the named database
    assert len(optuna.load_study(study_name=study.study_name, storage=study._storage).trials) >= 6


def test_python_api_in_process(tmp_path):
    check(run(1, tmp_path))


@pytest.mark.slow
def test_python_api_on_a_two_worker_ray_pool(tmp_path):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        study = run(2, tmp_path)
    finally:
        ray.shutdown()
    check(study)
    workers = {t.user_attrs[WORKER_ATTR]["pid"] for t in study.trials}
    assert len(workers) == 2  # trials ran in two other processes, which unpickled the model


def test_an_evaluate_that_raises_fails_its_trial_alone(tmp_path):
    study = paretoml.search(
        trained(), evaluate=flaky, metrics={"accuracy": "maximize"},
        example_inputs={"x": INPUTS[:8], "scale": torch.ones(1)},
        knobs=[{"kind": "bitwidth", "choices": [2, 8], "layers": {"include": r"^left\.0$"}}],
        objectives=["accuracy"], n_trials=2, baselines=[8, 2], seed=1,
        sampler={"name": "random"}, measure={"latency_repeats": 1, "latency_warmup": 0},
        deploy={"mode": "runtime", "emulate": True},  # the CPU has no 2-bit kernel: emulated, not dropped
    )
    failed = study.get_trials(states=(TrialState.FAIL,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2 and complete[0].params["bits:left.0"] == 8
    assert study.trials[1].state == TrialState.FAIL and study.trials[1].params["bits:left.0"] == 2
    assert failed and all("flaky evaluate: refuses 2-bit models" in t.user_attrs[ERROR_ATTR] for t in failed)


def nan_accuracy(model: nn.Module) -> dict[str, float]:
    return {"accuracy": float("nan")}


def test_an_evaluate_that_returns_nan_fails_every_trial_saying_why(tmp_path):
    url = f"sqlite:///{tmp_path / 'nan.db'}"
    with pytest.raises(TooManyFailuresError) as error:
        paretoml.search(
            trained(), evaluate=nan_accuracy, metrics={"accuracy": "maximize"},
            example_inputs={"x": INPUTS[:8], "scale": torch.ones(1)},
            knobs=[{"kind": "bitwidth", "choices": [2, 4, 8]}], objectives=["accuracy", "model_bytes"],
            n_trials=3, sampler={"name": "random"}, measure={"latency_repeats": 1, "latency_warmup": 0},
            storage=url, study_name="nan",
        )
    why = "the evaluation returned values that are not numbers: accuracy = nan"
    assert str(error.value) == f"5 trials failed in a row; the last error: trial 4: {why}"
    failed = optuna.load_study(study_name="nan", storage=url).get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 5 and all(t.user_attrs[ERROR_ATTR] == why for t in failed)


@pytest.mark.parametrize(("change", "message"), [
    ({"knobs": [{"kind": "bitwidth", "layers": {"include": "^encoder"}}]},
     "knobs: bitwidth knob's include pattern '^encoder' matches no layer; the model's layers are: left.0, left.2, right"),
    ({"objectives": ["accuracy", "perplexity"]},
     "objectives.1.name: unknown objective 'perplexity': task 'python-model' does not define it; available: "
     "accuracy, latency_ms, model_bytes, peak_memory_bytes, mean_bits"),
    ({"metrics": {"latency_ms": "minimize"}},
     "metrics: 'latency_ms' is a system objective; name your metric otherwise"),
])
def test_bad_input_is_one_clear_line(tmp_path, change, message):
    arguments = dict(evaluate=accuracy, metrics={"accuracy": "maximize"},
                     example_inputs={"x": INPUTS[:8], "scale": torch.ones(1)},
                     knobs=KNOBS, objectives=["accuracy"], n_trials=1)
    arguments.update(change)
    with pytest.raises(SpecError) as error:
        paretoml.search(trained(), **arguments)
    assert str(error.value) == message


def test_example_inputs_of_the_wrong_dtype_are_one_line_saying_what_the_first_layer_expects(capfd):
    with pytest.raises(SpecError) as error:
        paretoml.search(trained(), evaluate=accuracy, metrics={"accuracy": "maximize"},
                        example_inputs={"x": INPUTS[:8].double(), "scale": torch.ones(1)},
                        knobs=KNOBS, objectives=["accuracy"], n_trials=1)
    assert str(error.value).startswith(
        "example_inputs: the example inputs do not fit the model: its first layer left.0 (Linear) expects float32 "
        "of shape (..., 12), and got x=float64 (8, 12), scale=float32 (1,) (RuntimeError: "), str(error.value)
    assert "\n" not in str(error.value) and "Traceback" not in capfd.readouterr().err


def test_the_service_never_accepts_a_python_task():
    """What the REST API and the CLI parse: registered names only."""
    with pytest.raises(SpecError, match="unknown task 'python-model'"):
        parse_spec({"task": "python-model", "knobs": [{"kind": "bitwidth"}],
                    "objectives": [{"name": "accuracy"}], "n_trials": 1})
