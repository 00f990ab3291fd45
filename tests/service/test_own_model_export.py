"""A ``paretoml.search`` study after the search: exported from Python with the model, a
one-line pointer from ``paretoml export``, and listed read-only by REST and the dashboard."""

from __future__ import annotations

import optuna
import pytest
import torch
from fastapi.testclient import TestClient
from optuna.trial import TrialState
from torch import nn

import paretoml
from paretoml.search_space.trial_attrs import CONFIG_ATTR
from paretoml.objectives.deploy import read_manifest
from paretoml.service.api import create_app
from paretoml.service.cli import main
from paretoml.service.settings import Settings

INPUTS = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


REFERENCE = make_model()(INPUTS).detach()


def fidelity(model: nn.Module) -> dict[str, float]:
    with torch.no_grad():
        return {"fidelity": float(1 / (1 + (model(INPUTS) - REFERENCE).abs().mean()))}


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, optuna.Study]:
    url = f"sqlite:///{tmp_path_factory.mktemp('own-export') / 'own.db'}"
    study = paretoml.search(
        make_model(), evaluate=fidelity, metrics={"fidelity": "maximize"}, example_inputs=INPUTS[:4],
        knobs=[{"kind": "bitwidth", "choices": [2, 4, 8]}, {"kind": "prune", "high": 0.5, "step": 0.25}],
        objectives=["fidelity", "model_bytes"], n_trials=5, baselines=[8], storage=url, study_name="own",
        measure={"latency_repeats": 1, "latency_warmup": 0}, progress=False)
    return url, study


def test_export_from_python_rebuilds_the_trial(searched, tmp_path):
    url, study = searched
    trial = max(study.best_trials, key=lambda t: t.values[0])
    manifest = paretoml.export(optuna.load_study(study_name="own", storage=url), trial,
                               model=make_model(), example_inputs=INPUTS[:4], out=tmp_path / "out")
    assert manifest.study == "own" and manifest.trial == trial.number
    assert manifest.config == trial.user_attrs[CONFIG_ATTR]
    assert read_manifest(tmp_path / "out").objectives["model_bytes"] == trial.values[1]
    loaded = paretoml.load_compressed(tmp_path / "out", skeleton=make_model())
    assert fidelity(loaded)["fidelity"] == pytest.approx(trial.values[0], rel=1e-4)


def test_cli_export_says_how_in_one_line(searched, tmp_path, capsys):
    url, _ = searched
    assert main(["export", "own", "0", "-o", str(tmp_path / "x"), "--storage", url]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "paretoml.search" in err and "paretoml.export(study, trial, model=" in err


def test_rest_and_dashboard_list_and_read_it_read_only(searched):
    url, study = searched
    with TestClient(create_app(Settings(database_url=url, study_concurrency=0)),
                    raise_server_exceptions=False) as client:
        listed = client.get("/api/v1/studies").json()["items"]
        row = next(item for item in listed if item["id"] == "own")
        assert row["source"] == "python" and row["status"] == "completed" and row["task"] == "python-model"
        assert [o["name"] for o in row["objectives"]] == ["fidelity", "model_bytes"]
        assert row["progress"]["complete"] == 5
        detail = client.get("/api/v1/studies/own")
        assert detail.status_code == 200 and detail.json()["front_size"] == len(study.best_trials)
        assert client.get("/api/v1/studies/own/trials").json()["total"] == 5
        front = client.get("/api/v1/studies/own/frontier").json()
        complete = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
        assert {p["trial_number"] for p in front["points"]} == {t.number for t in study.best_trials} <= complete
        resumed = client.post("/api/v1/studies/own/resume")
        assert resumed.status_code == 409 and "from Python" in resumed.json()["detail"]
        exported = client.get("/api/v1/studies/own/trials/0/export")
        assert exported.status_code == 409 and "paretoml.export" in exported.json()["detail"]
        figures = client.get("/ui/api/studies/own/figures")
        assert figures.status_code == 200 and figures.json()["n_complete"] == 5
        assert client.get("/studies/own").status_code == 200
