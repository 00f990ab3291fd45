"""Contract of ``/api/v1/studies``: every endpoint and every error, with FastAPI's TestClient
against a real SQLite file."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tests.service.api.conftest import TOKEN, make_client, synthetic_spec, wait_for

API = "/api/v1"


def submit(client, **changes) -> str:
    response = client.post(f"{API}/studies", json=synthetic_spec(**changes))
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_submit_answers_202_and_the_job_is_stored_before_the_answer(client, tmp_path):
    response = client.post(f"{API}/studies", json=synthetic_spec(name="first"))
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["id"].startswith("first-")
    assert response.headers["location"] == body["location"] == f"{API}/studies/{body['id']}"
    with make_client(tmp_path) as other:  # another app on the same file: a restarted server
        stored = other.get(body["location"]).json()
    assert stored["status"] == "queued" and stored["spec"]["n_trials"] == 10
    assert stored["progress"] == {"budget": 10, "complete": 0, "running": 0, "failed": 0, "pruned": 0,
                                  "waiting": 0, "fraction": 0.0}


def test_list_is_paginated_newest_first_and_filtered_by_status(client):
    ids = [submit(client) for _ in range(5)]
    client.post(f"{API}/studies/{ids[0]}/stop")
    page = client.get(f"{API}/studies", params={"limit": 2}).json()
    assert page["total"] == 5 and [s["id"] for s in page["items"]] == ids[::-1][:2]
    page2 = client.get(f"{API}/studies", params={"limit": 2, "offset": 4}).json()
    assert [s["id"] for s in page2["items"]] == [ids[0]]
    queued = client.get(f"{API}/studies", params={"status": "queued"}).json()
    assert queued["total"] == 4 and ids[0] not in {s["id"] for s in queued["items"]}
    stopped = client.get(f"{API}/studies", params={"status": "stopped"}).json()
    assert [s["id"] for s in stopped["items"]] == [ids[0]]
    bad = client.get(f"{API}/studies", params={"status": "sleeping"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "status"]


@pytest.mark.parametrize(
    ("change", "loc", "words"),
    [
        ({"n_trials": 0}, ["body", "n_trials"], "greater than or equal to 1"),
        ({"n_trials": "many"}, ["body", "n_trials"], "valid integer"),
        ({"task": "imagenet-resnet"}, ["body", "task"], "; available: causal-lm, digits-cnn, digits-merge, "),
        ({"sampler": {"name": "hyperband"}}, ["body", "sampler"], "available: gp, nsga2, random, tpe, xgboost"),
        ({"sampler": {"name": "tpe", "options": {"n_startup": 3}}}, ["body", "sampler"], "has no option 'n_startup'"),
        ({"objectives": [{"name": "speed"}]}, ["body", "objectives", 0, "name"], "unknown objective 'speed'"),
        ({"knobs": [{"kind": "bitwidth", "choices": [32]}]}, ["body", "knobs", 0, "bitwidth", "choices"], "32"),
        ({"surprise": 1}, ["body", "surprise"], "Extra inputs are not permitted"),
        ({"deploy": {"mode": "fast"}}, ["body", "deploy", "mode"], "'runtime' or 'dequantize-at-load'"),
        ({"knobs": [{"kind": "bitwidth", "choices": [2, 3, 5]}], "baselines": [8, 4]}, ["body", "baselines"],
         "baseline bits [8, 4] are not among the choices [2, 3, 5] of the bitwidth knob knobs.0"),
        ({"knobs": [{"kind": "prune", "high": 0.5}], "warm_start": {"method": "sensitivity"}}, ["body", "warm_start"],
         "needs a bitwidth knob"),
    ],
)
def test_a_bad_spec_is_422_naming_the_field_and_stores_nothing(client, change, loc, words):
    response = client.post(f"{API}/studies", json=synthetic_spec(**change))
    assert response.status_code == 422
    errors = response.json()["detail"]
    match = [e for e in errors if e["loc"] == loc]
    assert match, errors
    assert words in match[0]["msg"]
    assert client.get(f"{API}/studies").json()["total"] == 0


def test_malformed_json_and_a_non_object_body_are_422(client):
    response = client.post(f"{API}/studies", content=b'{"task": ', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"
    response = client.post(f"{API}/studies", json=[1, 2])
    assert response.status_code == 422


def test_unknown_and_invalid_ids(client):
    response = client.get(f"{API}/studies/nope-123")
    assert response.status_code == 404 and response.json() == {"detail": "no study with id 'nope-123'"}
    for path in ("trials", "frontier"):
        assert client.get(f"{API}/studies/nope-123/{path}").status_code == 404
    for action in ("stop", "resume"):
        assert client.post(f"{API}/studies/nope-123/{action}").status_code == 404
    assert client.delete(f"{API}/studies/nope-123").status_code == 404
    response = client.get(f"{API}/studies/..%2Fetc")
    assert response.status_code in (404, 422)
    assert client.get(f"{API}/studies/a b").status_code == 422


def test_state_machine_of_stop_resume_and_delete(client):
    study = submit(client)
    assert client.delete(f"{API}/studies/{study}").status_code == 409  # queued: stop it first
    stopped = client.post(f"{API}/studies/{study}/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    again = client.post(f"{API}/studies/{study}/stop")
    assert again.status_code == 409 and "it is stopped" in again.json()["detail"]
    resumed = client.post(f"{API}/studies/{study}/resume")
    assert resumed.status_code == 202 and resumed.json()["status"] == "queued"
    assert client.post(f"{API}/studies/{study}/resume").status_code == 409  # already queued
    client.post(f"{API}/studies/{study}/stop")
    assert client.delete(f"{API}/studies/{study}").status_code == 204
    assert client.get(f"{API}/studies/{study}").status_code == 404


def test_writing_needs_the_token_when_one_is_set(tmp_path):
    with make_client(tmp_path, api_token=TOKEN) as client:
        spec = synthetic_spec()
        missing = client.post(f"{API}/studies", json=spec)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post(f"{API}/studies", json=spec, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert client.get(f"{API}/studies").json()["total"] == 0  # reading needs no token; nothing stored
        ok = client.post(f"{API}/studies", json=spec, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 202
        study = ok.json()["id"]
        for method, path in (("post", "stop"), ("post", "resume")):
            assert getattr(client, method)(f"{API}/studies/{study}/{path}").status_code == 401
        assert client.delete(f"{API}/studies/{study}").status_code == 401
        assert client.get(f"{API}/studies/{study}").json()["status"] == "queued"  # untouched


def test_a_body_over_the_limit_is_413_declared_or_streamed(tmp_path):
    with make_client(tmp_path, max_body_bytes=4096) as client:
        big = synthetic_spec(name="x", task_options={"width": 8, "faults": {str(i): "raise" for i in range(600)}})
        response = client.post(f"{API}/studies", json=big)
        assert response.status_code == 413 and "4096 bytes" in response.json()["detail"]

        def chunks():
            for _ in range(10):
                yield b" " * 1000

        streamed = client.post(f"{API}/studies", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert client.get(f"{API}/studies").json()["total"] == 0


def test_an_internal_error_is_500_without_a_trace(client, monkeypatch):
    study = submit(client)

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/paretoml/reads.py line 12")

    monkeypatch.setattr(client.app.state.reads, "detail", broken)
    response = client.get(f"{API}/studies/{study}")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the server log has the details"}
    assert "Traceback" not in response.text and "secret" not in response.text


def test_spec_validation_endpoint_parses_yaml_and_locates_errors(client):
    ok = client.post(f"{API}/specs/validate",
                     json={"text": "task: synthetic\nknobs: [{kind: bitwidth}]\nobjectives: [{name: fidelity}]\n"
                                   "n_trials: 3\n"})
    assert ok.status_code == 200 and ok.json()["n_trials"] == 3 and ok.json()["sampler"]["name"] == "tpe"
    bad = client.post(f"{API}/specs/validate", json={"text": "task: synthetic\nknobs: []\nobjectives: []\n"})
    assert bad.status_code == 422
    locs = [e["loc"] for e in bad.json()["detail"]]
    assert ["body", "spec", "knobs"] in locs and ["body", "spec", "n_trials"] in locs
    broken = client.post(f"{API}/specs/validate", json={"text": "task: [", "format": "yaml"})
    assert broken.status_code == 422 and "not valid YAML" in broken.json()["detail"][0]["msg"]
    scalar = client.post(f"{API}/specs/validate", json={"text": "42", "format": "json"})
    assert scalar.status_code == 422 and "mapping" in scalar.json()["detail"][0]["msg"]


# -- with the runners: real studies on Ray -------------------------------------------------------

def test_a_submitted_study_runs_to_its_budget_and_every_read_agrees(running_client, tmp_path):
    client = running_client
    study = submit(client, n_trials=12, baselines=[8])
    detail = wait_for(client, study, {"completed", "failed"})
    assert detail["status"] == "completed", detail["error"]
    assert client.get(f"{API}/health").json()["ray"] == "ok"
    assert detail["progress"]["complete"] == 12 and detail["progress"]["fraction"] == 1.0
    assert detail["timings"]["started_at"] and detail["timings"]["finished_at"]
    assert detail["timings"]["mean_trial_s"] > 0 and detail["runs"] == 1
    assert [layer["name"] for layer in detail["layers"]] == ["0", "2"]
    assert detail["reference"]["model_bytes"] > 0

    optuna_study = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path / 'api.db'}")
    complete = optuna_study.get_trials(states=(TrialState.COMPLETE,))
    trials = client.get(f"{API}/studies/{study}/trials", params={"limit": 5}).json()
    assert trials["total"] == len(optuna_study.trials) and [t["number"] for t in trials["items"]] == [0, 1, 2, 3, 4]
    first = trials["items"][0]
    assert first["note"] == "uniform 8-bit" and first["config"]["bits"] == {"0": 8, "2": 8}
    assert first["objectives_how"]["fidelity"]["how"] == "measured"
    assert first["objectives_how"]["model_bytes"]["how"] == "measured"
    assert first["values"] == dict(zip(["fidelity", "model_bytes"], optuna_study.trials[0].values))
    done = client.get(f"{API}/studies/{study}/trials", params={"state": "complete", "limit": 100}).json()
    assert done["total"] == len(complete) == 12
    brief = client.get(f"{API}/studies/{study}/trials", params={"brief": True}).json()
    assert set(brief["items"][0]) == {"number", "state", "values", "feasible", "duration_s"}
    one = client.get(f"{API}/studies/{study}/trials/3").json()
    assert one["params"] == optuna_study.trials[3].params
    assert client.get(f"{API}/studies/{study}/trials/999").status_code == 404

    best = {b["objective"]: b for b in detail["best"]}
    assert best["fidelity"]["value"] == max(t.values[0] for t in complete)
    assert best["model_bytes"]["value"] == min(t.values[1] for t in complete)

    front = client.get(f"{API}/studies/{study}/frontier").json()
    assert sorted(p["trial_number"] for p in front["points"]) == sorted(t.number for t in optuna_study.best_trials)
    assert front["history"] and front["history"][-1]["hypervolume"] == detail["hypervolume"] > 0
    assert front["reference_point"] == {"fidelity": 0.0, "model_bytes": 2 * detail["reference"]["model_bytes"]}
    assert client.post(f"{API}/studies/{study}/resume").status_code == 409  # completed
    assert client.post(f"{API}/studies/{study}/stop").status_code == 409


def test_stop_a_running_study_then_resume_it_to_exactly_its_budget(running_client, tmp_path):
    client = running_client
    study = submit(client, n_trials=30, task_options={"busy_ms": 150})
    deadline_body = wait_for(client, study, {"running"})
    assert deadline_body["status"] == "running"
    import time

    while client.get(f"{API}/studies/{study}").json()["progress"]["complete"] < 3:
        time.sleep(0.1)
    assert client.delete(f"{API}/studies/{study}").status_code == 409  # running
    response = client.post(f"{API}/studies/{study}/stop")
    assert response.status_code == 200 and response.json()["status"] in ("stopping", "stopped")
    stopped = wait_for(client, study, {"stopped"})
    assert 3 <= stopped["progress"]["complete"] < 30 and stopped["progress"]["running"] == 0
    url = f"sqlite:///{tmp_path / 'api.db'}"
    before = {t.number: t.values for t in optuna.load_study(study_name=study, storage=url).trials
              if t.state == TrialState.COMPLETE}
    assert client.post(f"{API}/studies/{study}/resume").status_code == 202
    finished = wait_for(client, study, {"completed", "failed"})
    assert finished["status"] == "completed" and finished["progress"]["complete"] == 30 and finished["runs"] == 2
    after = {t.number: t.values for t in optuna.load_study(study_name=study, storage=url).trials
             if t.state == TrialState.COMPLETE}
    assert len(after) == 30 and all(after[n] == v for n, v in before.items())


def test_a_study_whose_model_rejects_the_knobs_fails_with_the_reason(running_client):
    study = submit(running_client, knobs=[{"kind": "bitwidth", "layers": {"include": "nosuchlayer"}}])
    failed = wait_for(running_client, study, {"failed", "completed"})
    assert failed["status"] == "failed" and "include pattern 'nosuchlayer' matches no layer" in failed["error"]
    assert "Traceback" not in failed["error"]


def test_a_graceful_shutdown_queues_the_running_study_and_the_next_start_finishes_it(tmp_path, ray_runtime):
    import time

    with make_client(tmp_path, study_concurrency=1) as client:
        study = submit(client, n_trials=20, task_options={"busy_ms": 150})
        while client.get(f"{API}/studies/{study}").json()["progress"]["complete"] < 2:
            time.sleep(0.1)
    # the lifespan ended: in-flight trials finished, the job went back to the queue
    with make_client(tmp_path) as idle:
        body = idle.get(f"{API}/studies/{study}").json()
        assert body["status"] == "queued" and 2 <= body["progress"]["complete"] < 20
        assert body["progress"]["running"] == 0
    with make_client(tmp_path, study_concurrency=1) as client:
        done = wait_for(client, study, {"completed", "failed"})
    assert done["status"] == "completed" and done["progress"]["complete"] == 20 and done["runs"] == 2


def test_a_cli_run_is_a_job_the_api_lists_and_can_stop(tmp_path):
    import subprocess
    import sys
    import time

    import yaml

    spec = tmp_path / "cli.yaml"
    spec.write_text(yaml.safe_dump(synthetic_spec(n_trials=400, task_options={"busy_ms": 50})))
    url = f"sqlite:///{tmp_path / 'api.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "paretoml.service.cli", "run", str(spec), "--study-name", "from-cli",
                             "--storage", url, "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with make_client(tmp_path) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                body = client.get(f"{API}/studies/from-cli")
                if body.status_code == 200 and body.json()["progress"]["complete"] >= 3:
                    break
                time.sleep(0.2)
            listed = client.get(f"{API}/studies").json()["items"]
            assert [s["id"] for s in listed] == ["from-cli"] and listed[0]["status"] == "running"
            assert client.post(f"{API}/studies/from-cli/stop").json()["status"] == "stopping"
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert "stopped on request" in out
            stopped = client.get(f"{API}/studies/from-cli").json()
            assert stopped["status"] == "stopped" and stopped["progress"]["complete"] < 400
    finally:
        if proc.poll() is None:
            proc.kill()
