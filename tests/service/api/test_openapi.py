"""What the OpenAPI document promises, operation by operation: the errors each can send
(with the one shared error body), the methods each path serves (``Allow``), whether the
token is required, and what the spec-validation body requires. Errors that a generated
request cannot provoke (503 with the database gone, 413 from a client that means it) are
checked here from the operation's shape, by the rules of ``service/api/responses.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from paretoml.service.api import create_app, deps
from paretoml.service.api.app import API_PREFIX, API_ROUTERS
from paretoml.service.settings import Settings
from tests.service.api.conftest import TOKEN, make_client

ERROR_BODY = {"$ref": "#/components/schemas/ApiError"}
DATABASE = {deps.get_jobs, deps.get_reads, deps.get_scheduler}


def _calls(dependant: Dependant) -> set[Any]:
    found = set()
    for sub in dependant.dependencies:
        found.add(sub.call)
        found |= _calls(sub)
    return found


def _expected_errors(route: APIRoute, operation: dict[str, Any]) -> set[str]:
    calls = _calls(route.dependant)
    expected = set()
    if "requestBody" in operation:
        expected |= {"400", "413", "422"}
    if operation.get("parameters"):
        expected.add("422")
    if deps.require_token in calls:
        expected.add("401")
    if "{study_id}" in route.path:
        expected.add("404")
    if calls & DATABASE:
        expected.add("503")
    return expected


def test_every_operation_declares_the_errors_its_shape_implies(tmp_path: Path):
    document = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", api_token=TOKEN)).openapi()
    checked, missing, wrong_body = set(), [], []
    for router in API_ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in route.methods:
                label = f"{method} {API_PREFIX}{route.path}"
                operation = document["paths"][API_PREFIX + route.path][method.lower()]
                checked.add(label)
                missing += [f"{label}: {code}" for code in sorted(_expected_errors(route, operation) -
                                                                    set(operation["responses"]))]
                wrong_body += [f"{label}: {code}" for code, response in operation["responses"].items()
                               if code[0] in "45" and response["content"]["application/json"]["schema"] != ERROR_BODY]
    assert not missing, "declare with responses=errors(...) (service/api/responses.py): " + ", ".join(missing)
    assert not wrong_body, wrong_body
    served = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    assert checked == served  # every operation of the document is one of API_ROUTERS'
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's own 422 body


def test_allow_lists_every_method_served_at_the_path(client):
    for path, allowed in [("/api/v1/studies", "GET, POST"), ("/api/v1/studies/s-1", "GET, DELETE"),
                          ("/api/v1/studies/s-1/stop", "POST"), ("/api/v1/health", "GET")]:
        for method in ("OPTIONS", "PUT", "PATCH"):
            response = client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == allowed, (method, path)
            assert response.json() == {"detail": "Method Not Allowed"}


def test_the_token_is_optional_in_the_document_exactly_when_the_server_has_none(tmp_path: Path):
    def security(**settings: Any) -> list[dict[str, Any]]:
        app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", **settings))
        return app.openapi()["paths"]["/api/v1/studies"]["post"]["security"]

    assert security(api_token=TOKEN) == [{"HTTPBearer": []}]
    assert security() == [{"HTTPBearer": []}, {}]


def test_post_studies_links_its_new_id_to_every_operation_on_a_study(client):
    document = client.get("/openapi.json").json()
    created = document["paths"]["/api/v1/studies"]["post"]["responses"]["202"]
    by_id = {op["operationId"]: f"{method.upper()} {path}" for path, item in document["paths"].items()
             for method, op in item.items()}
    linked = {by_id[link["operationId"]] for link in created["links"].values()}
    assert all(link["parameters"] == {"study_id": "$response.body#/id"} for link in created["links"].values())
    on_a_study = {label for label in by_id.values() if label.split(" ")[1].endswith("{study_id}")
                  or "{study_id}/" in label and "{number}" not in label}
    assert linked == on_a_study
    assert "Location" in created["headers"]


def test_unreadable_body_is_a_documented_400(client):
    response = client.post("/api/v1/studies", content=b"\x80abc", headers={"content-type": "application/json"})
    assert response.status_code == 400 and isinstance(response.json()["detail"], str)
    response = client.post("/api/v1/specs/validate", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"


def test_spec_text_must_not_be_empty_and_the_schema_says_so(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SpecText"]
    assert schema["properties"]["text"]["minLength"] == 1
    response = client.post("/api/v1/specs/validate", json={"format": "json", "text": ""})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "text"]


def test_a_body_over_the_limit_is_a_documented_413_on_spec_validation(tmp_path: Path):
    with make_client(tmp_path, max_body_bytes=2048) as small:
        response = small.post("/api/v1/specs/validate", json={"format": "yaml", "text": "x" * 4096})
        assert response.status_code == 413 and "2048 bytes" in response.json()["detail"]
        assert "413" in small.get("/openapi.json").json()["paths"]["/api/v1/specs/validate"]["post"]["responses"]
