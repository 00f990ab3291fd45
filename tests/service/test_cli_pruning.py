"""``paretoml`` with a pruner, in real subprocesses: bad pruners exit 2; kill -9 and resume
keeps every pruning decision made before the kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

pytestmark = pytest.mark.slow


def paretoml(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paretoml.service.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


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
])
def test_a_bad_pruner_exits_2_with_one_line(tmp_path, pruner, message):
    result = paretoml("run", str(write_spec(tmp_path / "bad.yaml", pruner=pruner)), "--quiet", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "paretoml.db").exists()  # found before the database is opened


def _trial_states(db: Path, study: str) -> list[tuple[int, str, int]] | None:
    """(number, state, rungs reported) of a study's trials, through a read-only SQLite
    connection: Optuna's RDBStorage would write the schema's version rows when they are
    missing, racing the child that is creating the schema."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)) as connection:
            return connection.execute(
                "SELECT t.number, t.state, (SELECT COUNT(*) FROM trial_intermediate_values v "
                "WHERE v.trial_id = t.trial_id) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "WHERE s.study_name = ?", (study,)).fetchall()
    except sqlite3.Error:
        return None


def finished(url: str) -> dict[int, tuple]:
    study = optuna.load_study(study_name="k", storage=url)
    return {t.number: (t.state, t.params, t.values, t.intermediate_values, t.user_attrs.get("paretoml:stopped_at"))
            for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))}


def test_sigkill_then_resume_keeps_the_pruning_decisions(tmp_path):
    budget = 10
    spec = write_spec(tmp_path / "s.yaml", n_trials=budget)
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "paretoml.service.cli", "run", str(spec), "--study-name", "k", "--storage", url,
         "--quiet"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if not db.exists():
                continue
            states = _trial_states(db, "k")
            if states is None:  # schema or study not written yet
                continue
            pruned = [n for n, state, _ in states if state == "PRUNED"]
            done = [n for n, state, _ in states if state == "COMPLETE"]
            running = [n for n, state, rungs in states if state == "RUNNING" and rungs]
            if pruned and len(done) >= 2 and running:  # killed between rungs of a trial
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
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
