"""Each private Optuna name ParetoML uses, against the installed Optuna (one place to fail)."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from paretoml.surrogates import optuna_compat as compat


def test_storage_trial_id_and_contains(tmp_path):
    storage = RDBStorage(f"sqlite:///{tmp_path / 'c.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="c")
    trial = study.ask()
    raw = compat.study_storage(study)
    assert compat.storage_backend(raw) is storage
    number = raw.get_trial(compat.trial_id(trial)).number
    assert number == trial.number == 0
    assert compat.trial_id(study.trials[0]) == compat.trial_id(trial)
    raw.set_trial_system_attr(compat.trial_id(trial), "k", 1)
    assert study.trials[0].system_attrs["k"] == 1
    assert compat.contains(FloatDistribution(0, 1), 0.5) and not compat.contains(FloatDistribution(0, 1), 2.0)
    assert compat.contains(CategoricalDistribution([2, 4]), 4)


def test_heartbeats_and_stale_trials(tmp_path):
    storage = RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=1)
    assert compat.heartbeat_enabled(storage) and isinstance(storage, compat.BaseHeartbeat)
    assert not compat.heartbeat_enabled(optuna.storages.InMemoryStorage())
    study = optuna.create_study(storage=storage, study_name="h")
    trial = study.ask()
    storage.record_heartbeat(compat.trial_id(trial))
    study_id = storage.get_study_id_from_name("h")
    assert compat.stale_trial_ids(storage, study_id) == []
    import time

    time.sleep(2.2)
    assert compat.stale_trial_ids(storage, study_id) == [compat.trial_id(trial)]
    assert study.trials[0].state == TrialState.RUNNING


def test_rdb_internals_the_mirror_writes(tmp_path):
    storage = RDBStorage(f"sqlite:///{tmp_path / 'm.db'}")
    optuna.create_study(storage=storage, study_name="m")
    with compat.create_scoped_session(storage.scoped_session) as session:
        assert session.query(compat.rdb_models.StudyModel).count() == 1
    for name in ("TrialModel", "TrialHeartbeatModel", "TrialIntermediateValueModel", "TrialParamModel",
                 "TrialUserAttributeModel", "TrialSystemAttributeModel", "TrialValueModel"):
        assert hasattr(compat.rdb_models, name)
    assert compat.rdb_models.TrialValueModel.value_to_stored_repr(1.5)[0] == 1.5
    assert [s.study_name for s in storage.get_all_studies()] == ["m"]
    assert isinstance(storage.get_all_studies()[0], compat.FrozenStudy)


def test_nothing_else_uses_optunas_private_api():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    private_attrs = {"_storage", "_trial_id", "_contains", "_get_stale_trial_ids", "_backend"}
    offenders = []
    for folder in ("python_api", "search_space", "objectives", "surrogates", "service", "dashboard", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            if path.name == "optuna_compat.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                module = getattr(node, "module", None) if isinstance(node, ast.ImportFrom) else None
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [module or ""]
                if any(n.startswith("optuna") and any(p.startswith("_") for p in n.split(".")) for n in names):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}: import {names}")
                if (isinstance(node, ast.Attribute) and node.attr in private_attrs
                        and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}: .{node.attr}")
    assert not offenders, "\n".join(offenders)
