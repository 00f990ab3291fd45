"""``paretoml`` with a pruner, in real subprocesses: bad pruners exit 2; kill -9 and resume
keeps every pruning decision made before the kill."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.service.cli_process import TrialRow, paretoml, run_and_kill_when

from paretoml.search_space.trial_attrs import STOPPED_AT_ATTR

pytestmark = pytest.mark.slow


def write_spec(path: Path, **changes) -> Path:
    spec = {
        "task": "digits-cnn",
        "knobs": [{"kind": "bitwidth", "choices": [4, 8]},
                  {"kind": "learning_rate", "base_lr": 1e-3, "base_lr_range": [1e-4, 3.0]}],
        "objectives": [{"name": "accuracy"}, {"name": "model_bytes"}],
        "sampler": {"name": "random"},
        "finetune": {"steps": 80},
        "pruner": {"name": "successive-halving", "options": {"min_trials": 2}},
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": 10,
        "seed": 5,
    }
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(("pruner", "message"), [
    ({"name": "asha"}, "pruner: unknown pruner 'asha'; available: hyperband, median, none, successive-halving"),
    ({"name": "median", "options": {"startup": 2}}, "pruner: pruner 'median' has no option 'startup'"),
    ({"name": "median", "over": "batches"}, "pruner.over: Input should be 'finetune' or 'evaluation'"),
])
def test_a_bad_pruner_exits_2_with_one_line(tmp_path, pruner, message):
    result = paretoml("run", str(write_spec(tmp_path / "bad.yaml", pruner=pruner)), "--quiet", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "paretoml.db").exists()  # found before the database is opened


def finished(url: str) -> dict[int, tuple]:
    study = optuna.load_study(study_name="k", storage=url)
    return {t.number: (t.state, t.params, t.values, t.intermediate_values, t.user_attrs.get(STOPPED_AT_ATTR))
            for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))}


def test_sigkill_then_resume_keeps_the_pruning_decisions(tmp_path):
    budget = 10
    spec = write_spec(tmp_path / "s.yaml", n_trials=budget)
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"

    def ready(rows: list[TrialRow]) -> bool:  # killed between rungs of a trial
        return (any(state == "PRUNED" for _, state, _ in rows)
                and len([n for n, state, _ in rows if state == "COMPLETE"]) >= 2
                and any(state == "RUNNING" and rungs for _, state, rungs in rows))

    run_and_kill_when(["run", str(spec), "--study-name", "k", "--storage", url, "--quiet"], tmp_path, db, "k", ready)
    before = finished(url)
    assert any(state == TrialState.PRUNED for state, *_ in before.values()) and len(before) < budget

    result = paretoml("resume", "k", "--storage", url, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    after = finished(url)
    assert len(after) == budget  # pruned trials count towards the budget, before and after the kill
    for number, record in before.items():  # every decision made before the kill stands
        assert after[number] == record
    study = optuna.load_study(study_name="k", storage=url)
    assert not {n for n, r in after.items() if r[0] == TrialState.PRUNED} & {t.number for t in study.best_trials}
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
