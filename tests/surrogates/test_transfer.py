"""Surrogate transfer: name-free layer features, refused sources, resume from storage.

Sources are real stored studies: the synthetic task's small MLP run by the StudyRunner on
SQLite (a trial is one forward pass, so a study of 12 trials takes seconds)."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest
import torch

from paretoml.objectives.evaluate import SYSTEM_OBJECTIVES
from paretoml.search_space.introspect import introspect
from paretoml.search_space.knobs import BitwidthKnob, PruneKnob
from paretoml.search_space.space import JointSpace
from paretoml.service.spec import SpecError, parse_spec
from paretoml.service import runner as runner_module
from paretoml.service.executors.inprocess import InProcessExecutor
from paretoml.service.runner import StudyRunner
from paretoml.search_space.trial_attrs import SPEC_ATTR
from paretoml.surrogates import transfer
from paretoml.surrogates.layer_features import LayerTable, LayerValues, aggregate, feature_names
from paretoml.surrogates.transfer import SOURCES, TransferError, transfer_set
from paretoml.surrogates.xgboost_sampler import XGBoostSampler

optuna.logging.set_verbosity(optuna.logging.ERROR)


def spec(width: int, n_trials: int, sampler: dict[str, Any] | None = None, objectives=("fidelity", "model_bytes"),
         seed: int = 0) -> Any:
    return parse_spec({
        "task": "synthetic", "task_options": {"width": width, "seed": width},
        "knobs": [{"kind": "bitwidth", "choices": [2, 3, 4, 6, 8]},
                  {"kind": "prune", "method": "unstructured", "low": 0.0, "high": 0.5, "step": 0.125}],
        "objectives": [{"name": n} for n in objectives],
        "sampler": sampler or {"name": "random"},
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": n_trials, "seed": seed,
    })


def run_study(url: str, name: str, study_spec: Any) -> optuna.Study:
    storage = optuna.storages.RDBStorage(url)
    with InProcessExecutor(study_spec) as executor:
        runner = StudyRunner.create(study_spec, storage, name, executor)
        runner.run()
    return runner.study


@pytest.fixture
def storage_url(tmp_path):
    SOURCES.clear()
    yield f"sqlite:///{tmp_path / 'studies.db'}"
    SOURCES.clear()


# -- features -----------------------------------------------------------------------------------
class Net(torch.nn.Module):
    def __init__(self, names: tuple[str, str, str]) -> None:
        super().__init__()
        self.names = names
        for name, (i, o) in zip(names, [(16, 32), (32, 32), (32, 4)]):
            setattr(self, name, torch.nn.Linear(i, o))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = torch.relu(getattr(self, name)(x))
        return x


def test_features_are_the_same_for_models_that_differ_only_in_names():
    knobs = [BitwidthKnob(choices=[2, 4, 8]), PruneKnob(method="unstructured", low=0.0, high=0.5, step=0.125)]
    out = []
    for names in [("fc1", "fc2", "head"), ("encoder_in", "mixer", "classifier")]:
        layers = introspect(Net(names), torch.randn(2, 16))
        space = JointSpace(knobs, layers)
        table = LayerTable.from_rows([{"name": la.name, "kind": la.kind, "weight_shape": la.weight_shape,
                                       "num_params": la.num_params} for la in layers],
                                     {la.name: {2: 0.3 * k, 4: 0.1 * k, 8: 0.0} for k, la in enumerate(layers)})
        rng = np.random.default_rng(0)
        points = rng.random((50, space.encoding.size))
        from_points = aggregate(table, LayerValues.from_points(table, space.encoding, space.param_layers, points))
        configs = [space.config_from_params(space.decode(p)).to_dict() for p in points]
        from_configs = aggregate(table, LayerValues.from_configs(table, configs))
        np.testing.assert_allclose(from_points, from_configs)  # candidates and stored trials agree
        out.append(from_points)
    np.testing.assert_array_equal(out[0], out[1])
    assert out[0].shape == (50, len(feature_names()))
    named = dict(zip(feature_names(), out[0].T))
    assert np.isnan(named["kind.conv.log_bits"]).all() and np.isnan(named["merge.mean"]).all()
    assert np.isfinite(named["sens.sum"]).all() and np.ptp(named["global.bytes_ratio"]) > 0


def test_objective_kinds_match_by_role():
    assert "model_bytes" in SYSTEM_OBJECTIVES and "fidelity" not in SYSTEM_OBJECTIVES
    maximize, minimize = optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
    fidelity, accuracy = transfer.ObjectiveKind("fidelity", maximize), transfer.ObjectiveKind("accuracy", maximize)
    assert fidelity.matches(accuracy)  # both a kept fraction of the uncompressed model's quality
    assert not transfer.ObjectiveKind("model_bytes", minimize).matches(transfer.ObjectiveKind("latency_ms", minimize))
    assert not fidelity.matches(transfer.ObjectiveKind("fidelity", minimize))


# -- refused sources ----------------------------------------------------------------------------
def test_a_mismatched_source_is_refused_with_one_line(storage_url):
    run_study(storage_url, "latency-source", spec(32, 3, objectives=("fidelity", "latency_ms")))
    storage = optuna.storages.RDBStorage(storage_url)
    for names, why in [(["latency-source"], "measures different objectives"),
                       (["nowhere"], "no study named 'nowhere'")]:
        target = spec(48, 3, {"name": "xgboost", "options": {"transfer_from": names}})
        with InProcessExecutor(target) as executor, pytest.raises(SpecError) as error:
            StudyRunner.create(target, storage, f"t-{names[0]}", executor)
        message = str(error.value)
        assert why in message and "\n" not in message and message.startswith("sampler.options.transfer_from")
        assert not runner_module.study_exists(storage, f"t-{names[0]}")  # nothing made


def test_a_source_sharing_no_layer_kind_is_refused(storage_url):
    run_study(storage_url, "mlp", spec(32, 3))
    source = SOURCES.source(optuna.storages.RDBStorage(storage_url), "mlp").description
    with pytest.raises(TransferError, match="shares no layer kind with this model"):
        transfer.align(source, source.objectives, {"conv"})


# -- the sampler with sources -------------------------------------------------------------------
def target_spec(n_trials: int) -> Any:
    return spec(48, n_trials, {"name": "xgboost", "options": {
        "transfer_from": ["source"], "n_candidates": 200, "n_estimators": 15}}, seed=3)


def test_sources_join_the_training_set_once_per_process(storage_url):
    run_study(storage_url, "source", spec(32, 12))
    study = run_study(storage_url, "target", target_spec(4))
    assert SOURCES.reads == 1  # read at validation, reused by every suggestion
    encoding = XGBoostSampler().infer_relative_search_space(study, study.trials[-1])
    from paretoml.search_space.encoding import VectorEncoding

    data = transfer_set(study, VectorEncoding(encoding), ["source"])
    assert data.features.shape == (12, len(feature_names())) and set(data.study) == {1.0}
    # normalised: fidelity is a fraction of the uncompressed model's, bytes of its fp32 bytes
    assert (data.losses[:, 0] >= -1.0 - 1e-6).all() and (data.losses[:, 1] < 1.0).all()
    assert transfer.source_weight(0, 20.0) == 1.0 and transfer.source_weight(20, 20.0) == 0.5


def test_a_resumed_study_with_sources_suggests_what_a_never_stopped_one_would(storage_url):
    run_study(storage_url, "source", spec(32, 12))
    whole = run_study(storage_url, "whole", target_spec(7))
    storage = optuna.storages.RDBStorage(storage_url)
    first = spec(48, 4, {"name": "xgboost", "options": {"transfer_from": ["source"], "n_candidates": 200,
                                                         "n_estimators": 15}}, seed=3)
    with InProcessExecutor(first) as executor:
        StudyRunner.create(first, storage, "cut", executor).run()
    # the study's stored spec asks for 4 trials; a resume in a "new process" runs it to 7
    SOURCES.clear()
    spec_json = dict(storage.get_study_user_attrs(storage.get_study_id_from_name("cut"))[SPEC_ATTR])
    spec_json["n_trials"] = 7
    storage.set_study_user_attr(storage.get_study_id_from_name("cut"), SPEC_ATTR, spec_json)
    with InProcessExecutor(parse_spec(spec_json)) as executor:
        resumed = StudyRunner.resume(storage, "cut", executor).run()
    assert SOURCES.reads == 1
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]
    assert len({tuple(sorted(t.params.items())) for t in whole.trials}) == 7


def test_source_rows_are_capped_keeping_the_front():
    rng = np.random.default_rng(0)
    losses = rng.random((1000, 2))
    keep = transfer.source_rows(losses, 400)
    from paretoml.surrogates.pareto import non_dominated

    front = set(np.flatnonzero(non_dominated(losses)).tolist())
    assert len(keep) <= 400 and front <= set(keep.tolist()) and len(set(keep.tolist())) == len(keep)
    assert list(transfer.source_rows(losses[:50], 400)) == list(range(50))
