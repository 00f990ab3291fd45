"""The ``paretoml`` command end to end, in real subprocesses on real SQLite files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.service.cli_process import TrialRow, paretoml, run_and_kill_when

from paretoml.search_space.trial_attrs import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    ERROR_ATTR,
    LAYERS_ATTR,
    OPTUNA_RETRY_ATTR,
    PROVENANCE_ATTR,
    SPEC_ATTR,
)

pytestmark = pytest.mark.slow

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def write_spec(path: Path, **changes) -> Path:
    spec = {
        "task": "digits-cnn",
        "knobs": [{"kind": "bitwidth", "choices": [2, 4, 8]}, {"kind": "prune", "high": 0.9, "step": 0.1}],
        "objectives": [{"name": "accuracy"}, {"name": "model_bytes"}],
        "sampler": {"name": "tpe", "options": {"n_startup_trials": 5}},
        "measure": {"latency_repeats": 3, "latency_warmup": 1},
        "n_trials": 12,
        "seed": 3,
    }
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec))
    return path


def completed(url: str, name: str) -> dict[int, tuple]:
    study = optuna.load_study(study_name=name, storage=url)
    return {t.number: (t.params, t.values, t.user_attrs.get(CONFIG_ATTR))
            for t in study.get_trials(states=(TrialState.COMPLETE,))}


def test_two_objective_run_end_to_end(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", baselines=[8])
    result = paretoml("run", str(spec), "--study-name", "e2e", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Pareto front of e2e" in result.stdout
    # the default storage is a SQLite file in the working directory, readable by plain Optuna
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{tmp_path / 'paretoml.db'}")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 12
    assert trials[0].user_attrs[BASELINE_ATTR] == "uniform 8-bit"
    assert set(trials[0].user_attrs[CONFIG_ATTR]["bits"].values()) == {8}
    assert trials[0].user_attrs[PROVENANCE_ATTR]["model_bytes"]["how"] == "measured"  # counted on what runs
    assert trials[0].user_attrs[PROVENANCE_ATTR]["accuracy"]["how"] == "measured"
    assert study.user_attrs[SPEC_ATTR]["task"] == "digits-cnn"
    # the objectives' names are Optuna's metric names (optuna-dashboard and plots label axes with them)
    assert study.metric_names == ["accuracy", "model_bytes"]
    assert {row["name"] for row in study.user_attrs[LAYERS_ATTR]} == {"conv1", "conv2", "fc1", "fc2"}
    front = study.best_trials
    assert front and all(t.values[0] > 0.1 for t in front)
    # one table row per Pareto trial
    assert sum(1 for line in result.stdout.splitlines() if line.startswith("│")) == len(front)
    # the same study again is refused, and nothing changes
    again = paretoml("run", str(spec), "--study-name", "e2e", "--quiet", cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert len(optuna.load_study(study_name="e2e", storage=study._storage).trials) == len(study.trials)


@pytest.fixture(scope="module")
def kept_study(tmp_path_factory):
    """A finished study that bad input must leave exactly as it is."""
    path = tmp_path_factory.mktemp("kept")
    good = write_spec(path / "good.yaml", n_trials=3)
    assert paretoml("run", str(good), "--study-name", "kept", "--quiet", cwd=path).returncode == 0
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"task": "imagenet"}, "task: unknown task 'imagenet'"),
        ({"deploy": {"mode": "fast"}}, "deploy.mode: Input should be 'runtime' or 'dequantize-at-load'"),
        ({"knobs": [{"kind": "bitwidth", "choices": [4, 12]}]}, "knobs.0.bitwidth.choices: bits [12] not supported"),
        ({"knobs": [{"kind": "prune", "low": -0.1}]}, "knobs.0.prune: prune ratio range [-0.1, 0.9]"),
        ({"knobs": [{"kind": "merge"}]}, "a merge knob needs a task with checkpoints"),
        ({"knobs": [{"kind": "bitwidth", "choices": [2, 3, 5]}], "baselines": [8, 4]},
         "baselines: baseline bits [8, 4] are not among the choices [2, 3, 5] of the bitwidth knob knobs.0"),
        # found once the model's layers are known: 16-bit weights are above any budget below 1.0
        ({"knobs": [{"kind": "bitwidth", "choices": [16]}], "warm_start": {"fractions": [0.1, 0.5]}},
         "warm_start.fractions: no budget of [0.1, 0.5]"),
    ],
)
def test_bad_specs_exit_2_with_one_line_and_touch_nothing(kept_study, change, message):
    db = kept_study / "paretoml.db"
    before = completed(f"sqlite:///{db}", "kept")
    names_before = optuna.get_all_study_names(f"sqlite:///{db}")
    mtime = db.stat().st_mtime_ns
    bad = write_spec(kept_study / "bad.yaml", **change)
    result = paretoml("run", str(bad), "--quiet", cwd=kept_study)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert optuna.get_all_study_names(f"sqlite:///{db}") == names_before
    assert completed(f"sqlite:///{db}", "kept") == before
    if "merge" not in message and "warm_start" not in message:  # spec errors are found before the database is even opened
        assert db.stat().st_mtime_ns == mtime


def test_a_spec_file_that_is_not_utf8_is_one_line_exit_2(tmp_path):
    spec = write_spec(tmp_path / "s.yaml")
    spec.write_bytes("# written in Latin-1: caf\u00e9\n".encode("latin-1") + spec.read_bytes())
    result = paretoml("run", str(spec), "--quiet", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "s.yaml is not UTF-8 text" in lines[0], result.stderr
    assert not (tmp_path / "paretoml.db").exists()


def test_unknown_study_and_bad_storage_are_clear_errors(tmp_path):
    result = paretoml("resume", "nope", cwd=tmp_path)
    assert result.returncode == 2 and "no study named 'nope'" in result.stderr
    result = paretoml("front", "x", "--storage", "sqlite:////no/such/dir/x.db", cwd=tmp_path)
    assert result.returncode == 2 and "no database at" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"], ids=["inprocess", "ray-2-workers"])
def test_sigkill_mid_study_then_resume_loses_nothing(tmp_path, workers):
    budget = 14  # killed at 6 complete or more: the resume runs the rest and the retry
    # fine-tuning makes each trial long enough to be killed in the middle of one
    spec = write_spec(tmp_path / "s.yaml", n_trials=budget, finetune={"steps": 150})
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"

    def ready(rows: list[TrialRow]) -> bool:
        return len([n for n, state, _ in rows if state == "COMPLETE"]) >= 6 and any(
            state == "RUNNING" for _, state, _ in rows)

    rows = run_and_kill_when(["run", str(spec), "--study-name", "k", "--storage", url, "--quiet",
                              "--workers", workers, "--worker-cpus", "0.5"], tmp_path, db, "k", ready)
    running_at_kill = [number for number, state, _ in rows if state == "RUNNING"]
    before = completed(url, "k")
    assert 6 <= len(before) < budget

    result = paretoml("resume", "k", "--storage", url, "--quiet", "--workers", workers, "--worker-cpus", "0.5",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    study = optuna.load_study(study_name="k", storage=url)
    after = completed(url, "k")
    assert len(after) == budget
    for number, record in before.items():  # nothing completed before the kill changed
        assert after[number] == record
    # the trial that was running when the process died failed, and its retry completed
    trials = {t.number: t for t in study.trials}
    for number in running_at_kill:
        if number in before:  # it finished between our read and the kill
            continue
        assert trials[number].state == TrialState.FAIL
        assert trials[number].user_attrs[ERROR_ATTR].startswith("interrupted: its runner stopped")
        retries = [t for t in study.trials if t.system_attrs.get(OPTUNA_RETRY_ATTR) == number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
        assert ERROR_ATTR not in retries[0].user_attrs  # the retry did not fail
        # a trial killed while its parameters were being drawn is retried with those it had
        assert trials[number].params.items() <= retries[0].params.items()
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(t.user_attrs.get(ERROR_ATTR) for t in study.trials if t.state == TrialState.FAIL)


def test_serve_refuses_bad_settings_with_one_line(tmp_path):
    result = paretoml("serve", "--storage", "sqlite:////no/such/dir/x.db", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    result = paretoml("serve", "--port", "70000", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "port" in result.stderr and "Traceback" not in result.stderr


def test_a_ray_that_cannot_start_is_one_line_and_the_job_is_marked_failed(tmp_path):
    # the Ray pool's own start (--workers 2), failing after Ray has spawned its processes
    from paretoml.service.jobs import JobRepository

    spec = write_spec(tmp_path / "s.yaml", n_trials=2)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "PARETOML_TEST_RAY_FAILURES": "always", "PARETOML_TEST_RAY_FAULT": "node",
           "RAY_DISABLE_USAGE_STATS": "1"}
    env.pop("RAY_ADDRESS", None)
    launcher = Path(__file__).with_name("ray_faults.py")
    result = subprocess.run([sys.executable, str(launcher), "run", str(spec), "--workers", "2", "--storage", url,
                             "--study-name", "no-ray", "--quiet"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "paretoml: error: cannot start or join Ray: RuntimeError: injected fault: the node's processes started, "
        "then its start failed")
    assert "Traceback" not in result.stderr
    job = JobRepository(url).get("no-ray")
    assert job.status == "failed" and "injected fault" in (job.error or "")


def test_runtime_mode_lists_the_choices_the_cpu_has_no_kernel_for(tmp_path):
    """Issue 24: a CLI line and a study attribute name the dropped choices, once."""
    from paretoml.search_space.trial_attrs import DROPPED_CHOICES_ATTR

    spec = write_spec(tmp_path / "s.yaml", knobs=[{"kind": "bitwidth", "choices": [4, 8, 16]}], n_trials=2,
                      sampler={"name": "random"},
                      objectives=[{"name": "accuracy"}, {"name": "model_bytes"}, {"name": "latency_ms"}])
    url = f"sqlite:///{tmp_path / 'd.db'}"
    result = paretoml("run", str(spec), "--study-name", "d", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "not offered" in line]
    assert len(lines) == 1 and "bits:conv1 4, 8" in lines[0] and "bits:fc2 4" in lines[0], result.stdout
    study = optuna.load_study(study_name="d", storage=url)
    assert study.user_attrs[DROPPED_CHOICES_ATTR] == {
        "device": "cpu", "dropped": {"bits:conv1": [4, 8], "bits:conv2": [4, 8], "bits:fc2": [4]}}
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2 and all(t.user_attrs[PROVENANCE_ATTR]["latency_ms"]["how"] == "measured" for t in done)
