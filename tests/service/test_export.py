"""Export of a stored trial: ``paretoml export`` and ``GET .../trials/{n}/export`` on a real
study run by the CLI (the synthetic task, one trial made to fail)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import optuna
import pytest
import yaml
from fastapi.testclient import TestClient
from optuna.trial import TrialState

import paretoml as paretoml_api
from paretoml.objectives import measure
from paretoml.objectives.deploy import load_deployment, read_manifest
from paretoml.objectives.deploy.export import weights_file_bytes
from paretoml.objectives.tasks.registry import create_task
from paretoml.service.api import create_app
from paretoml.service.settings import Settings

pytestmark = pytest.mark.slow

OPTIONS = {"width": 64, "faults": {2: "raise"}}


def paretoml(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paretoml.service.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("export")
    spec = {
        "task": "synthetic", "task_options": OPTIONS,
        "knobs": [{"kind": "bitwidth", "choices": [2, 4, 8, 16]}, {"kind": "activation_bits"},
                  {"kind": "prune", "high": 0.8, "step": 0.1}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}, {"name": "latency_ms"}],
        "constraints": [{"kind": "latency_ms", "max_ms": 1000}],
        "measure": {"latency_repeats": 3, "latency_warmup": 1},
        "n_trials": 5, "seed": 1,
    }
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{tmp / 'studies.db'}"
    result = paretoml("run", "spec.yaml", "--study-name", "ex", "--storage", url, "--quiet", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return tmp, url


def test_cli_export_reloads_to_the_trials_values(study):
    tmp, url = study
    trials = optuna.load_study(study_name="ex", storage=url).get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert trials[2].state == TrialState.FAIL and len(done) == 5
    # the latency budget was computed from the measured latency, after the trial ran
    assert all(t.constraints == {"latency_ms": t.values[2] - 1000} for t in done)
    trial = done[-1]
    out = tmp / "out"
    result = paretoml("export", "ex", str(trial.number), "-o", str(out), "--storage", url, cwd=tmp)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest.study == "ex" and manifest.trial == trial.number
    assert manifest.objectives == {"fidelity": trial.values[0], "model_bytes": trial.values[1],
                                   "latency_ms": trial.values[2]}
    assert manifest.provenance["latency_ms"]["how"] in ("measured", "estimated")
    bundle = create_task("synthetic", OPTIONS).load(__import__("torch").device("cpu"))
    reference = measure.predict(bundle.model, bundle.val_inputs)
    loaded = load_deployment(out)
    assert measure.fidelity(loaded.model, bundle.val_inputs, reference) == trial.values[0]
    size, header = weights_file_bytes(out)
    assert abs(size - header - trial.values[1]) <= 0.02 * trial.values[1]


def test_cli_export_errors_are_one_line(study):
    tmp, url = study
    for args, message in [(("ex", "99"), "has no trial 99"), (("nope", "0"), "no study named 'nope'"),
                          (("ex", "2"), "trial 2 of 'ex' is fail, not complete")]:
        result = paretoml("export", *args, "-o", str(tmp / "x"), "--storage", url, cwd=tmp)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_rest_export_archive_404_and_409(study):
    tmp, url = study
    settings = Settings(database_url=url, study_concurrency=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/api/v1/studies/ex/trials/0/export")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/zip"
        names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
        assert sorted(names) == ["ex-trial0/manifest.json", "ex-trial0/model.safetensors"]
        # the downloaded zip loads as it is, like the folder `paretoml export` writes
        (tmp / "ex-trial0.zip").write_bytes(response.content)
        bundle = create_task("synthetic", OPTIONS).load(__import__("torch").device("cpu"))
        reference = measure.predict(bundle.model, bundle.val_inputs)
        loaded = paretoml_api.load_compressed(tmp / "ex-trial0.zip")
        trial0 = optuna.load_study(study_name="ex", storage=url).trials[0]
        assert measure.fidelity(loaded, bundle.val_inputs, reference) == trial0.values[0]
        assert read_manifest(str(tmp / "ex-trial0.zip")).trial == 0
        missing = client.get("/api/v1/studies/ex/trials/99/export")
        assert missing.status_code == 404 and "no trial 99" in missing.json()["detail"]
        assert client.get("/api/v1/studies/nope/trials/0/export").status_code == 404
        failed = client.get("/api/v1/studies/ex/trials/2/export")
        assert failed.status_code == 409 and "not complete" in failed.json()["detail"]
