"""``/tasks``, ``/samplers`` and ``/health``."""

from __future__ import annotations

import pytest

from paretoml.objectives.tasks.registry import available_tasks
from paretoml.surrogates.registry import SAMPLERS


def test_tasks_list_every_registered_task_with_its_options(client):
    tasks = {t["name"]: t for t in client.get("/api/v1/tasks").json()}
    assert set(tasks) == set(available_tasks())
    assert "busy_ms" in tasks["synthetic"]["options_schema"]["properties"]
    assert tasks["digits-cnn"]["summary"]


def test_samplers_list_every_registered_sampler_with_typed_options(client):
    samplers = {s["name"]: s for s in client.get("/api/v1/samplers").json()}
    assert set(samplers) == set(SAMPLERS) == {"random", "tpe", "gp", "nsga2", "xgboost", "zeroth-order"}
    assert "n_startup_trials" in samplers["tpe"]["options_schema"]["properties"]
    assert samplers["random"]["constraint_aware"] is False and samplers["xgboost"]["constraint_aware"] is True


def test_health_reports_the_database_and_the_queue(client):
    client.post("/api/v1/studies", json={"task": "synthetic", "knobs": [{"kind": "bitwidth"}],
                                        "objectives": [{"name": "fidelity"}], "n_trials": 2})
    body = client.get("/api/v1/health").json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["queued"] == 1 and body["studies_running_here"] == 0
    assert body["ray"] == "off"  # study_concurrency 0: this server never starts Ray


def test_openapi_documents_every_endpoint_and_the_docs_page_is_served(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/studies", "/api/v1/studies/{study_id}", "/api/v1/studies/{study_id}/trials",
            "/api/v1/studies/{study_id}/frontier", "/api/v1/studies/{study_id}/stop",
            "/api/v1/studies/{study_id}/resume", "/api/v1/tasks", "/api/v1/samplers", "/api/v1/health"} <= set(paths)
    assert "delete" in paths["/api/v1/studies/{study_id}"]


@pytest.mark.parametrize("page, script", [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_docs_pages_load_their_scripts_from_this_server_not_a_cdn(client, page, script):
    html = client.get(page)
    assert html.status_code == 200
    assert f'src="/docs-static/{script}"' in html.text
    assert "cdn." not in html.text and "https://" not in html.text.split("<body>")[-1]
    served = client.get(f"/docs-static/{script}")
    assert served.status_code == 200 and len(served.content) > 500_000
