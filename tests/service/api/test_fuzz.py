"""The OpenAPI document says exactly what the server does: schemathesis, in process against
the app (ASGI), runs every phase (examples, coverage, fuzzing with valid and invalid
requests, and the stateful phase that follows the links from ``POST /studies``) over every
operation with every check, and finds nothing.

The server has an API token, so that 401 and the ignored-auth check are exercised; jobs are
accepted and not run (the HTTP layer is under test). Bounded and reproducible: a fixed seed,
few examples per operation, no example database, no cache."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.engine import Status, StopReason, events, from_schema
from schemathesis.engine.run import PhaseName
from schemathesis.python import asgi

from paretoml.service.api import create_app
from paretoml.service.settings import Settings
from tests.service.api.conftest import TOKEN

TESTING_PHASES = {PhaseName.EXAMPLES, PhaseName.COVERAGE, PhaseName.FUZZING, PhaseName.STATEFUL_TESTING}

# A spec can be valid by the schema and still be refused (422): JSON Schema cannot say that
# the task is a registered one, that its options exist, that `low` is below `high`, ... So
# for the two operations that take a spec, 422 is an answer to valid data too, as their
# documented 422 says; every other operation must accept what its schema allows.
SPEC_OPERATIONS = ("submit_study", "validate_spec")
ACCEPTED_BESIDES_422 = ["2xx", "401", "404", "409"]
# schemathesis's list of rejections, and 413: a body over the server's limit is refused unread
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]


def _config(max_examples: int) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": 20261130,
        "cache": {"enabled": False},
        "generation": {"mode": "all", "max-examples": max_examples, "database": "none"},
        "checks": {"enabled": True, "negative_data_rejection": {"expected-statuses": REJECTED}},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
                   "stateful": {"enabled": True}},
        "auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}},
        "operations": [{"include-operation-id": operation,
                        "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED_BESIDES_422, "422"]}}}
                       for operation in SPEC_OPERATIONS],
    })


def _run(app: Any, max_examples: int) -> tuple[list[str], dict[PhaseName, Counter[tuple[str, str, int]]], set[str], list[Any]]:
    """Findings, per phase the (method, path, status) of every answer, the operations the
    fuzzing phase tested, and the PhaseFinished events."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=_config(max_examples))
    findings: dict[tuple[str | None, str, str], str] = {}
    answers: dict[PhaseName, Counter[tuple[str, str, int]]] = {phase: Counter() for phase in TESTING_PHASES}
    fuzzed: set[str] = set()
    phases: list[events.PhaseFinished] = []
    try:
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                if event.phase is PhaseName.FUZZING and event.status is Status.SUCCESS and event.label:
                    fuzzed.add(event.label)
                for checks in event.recorder.checks.values():
                    for check in checks:
                        if check.failure_info is not None:
                            failure = check.failure_info.failure
                            findings.setdefault((event.label, check.name, failure.title),
                                                f"{event.phase}: {event.label}: {check.name}: {failure.title}\n"
                                                f"{failure.message}\n{check.failure_info.code_sample[:1500]}")
                for interaction in event.recorder.interactions.values():
                    if interaction.response is not None and event.phase in answers:
                        path = interaction.request.uri.split("testserver", 1)[-1].split("?")[0]
                        answers[event.phase][(interaction.request.method, path, interaction.response.status_code)] += 1
            elif isinstance(event, (events.NonFatalError, events.FatalError)):
                findings[("error", type(event).__name__, str(id(event)))] = repr(event)
            elif isinstance(event, events.PhaseFinished):
                phases.append(event)
            elif isinstance(event, events.EngineFinished):
                assert event.stop_reason is StopReason.COMPLETED, event.stop_reason
                findings.update({("after run", str(i), ""): repr(f) for i, f in enumerate(event.failures)})
    finally:
        asgi.shutdown_lifespans()  # the app's scheduler, started by schemathesis's first request
    return list(findings.values()), answers, fuzzed, phases


def _template(path: str) -> str:
    """``/api/v1/studies/abc-1/trials`` -> ``/api/v1/studies/{study_id}/trials``."""
    parts = path.split("/")
    return "/".join([*parts[:4], "{study_id}", *parts[5:]])


def test_schemathesis_finds_no_mismatch_in_any_phase(tmp_path: Path):
    set_hypothesis_home_dir(tmp_path / "hypothesis")  # its caches, not in the working tree
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'api.db'}", study_concurrency=0,
                              api_token=TOKEN, job_heartbeat_s=0.3))
    operations = {f"{method.upper()} {path}" for path, item in app.openapi()["paths"].items() for method in item}
    try:
        findings, answers, fuzzed, phases = _run(app, max_examples=10)
    finally:
        set_hypothesis_home_dir(None)

    assert not findings, f"{len(findings)} findings:\n\n" + "\n\n".join(findings)
    # every testing phase ran, and the fuzzing phase tested every operation
    ran = {event.phase.name for event in phases if event.phase.is_enabled and event.status is Status.SUCCESS}
    assert TESTING_PHASES <= ran, ran
    assert fuzzed == operations, operations ^ fuzzed
    # it reached real code: accepted studies, invalid input refused, the token demanded
    statuses = Counter(status for counter in answers.values() for (_, _, status) in counter.elements())
    assert statuses[202] > 0 and statuses[422] > 0 and statuses[401] > 0 and statuses[405] > 0
    # the stateful phase created studies and followed the links to operations on them
    stateful = answers[PhaseName.STATEFUL_TESTING]
    assert any(method == "POST" and path == "/api/v1/studies" and status == 202 for method, path, status in stateful)
    followed = {f"{method} {_template(path)}" for method, path, status in stateful
                if status < 300 and path.startswith("/api/v1/studies/")}
    assert len(followed) >= 3, followed
    print(f"{sum(statuses.values())} requests; statuses {dict(sorted(statuses.items()))}")


# Bodies schemathesis does not send: bytes that are not UTF-8 (or not JSON at all) under
# every content type, to every operation that takes a body. Each must be a documented 4xx.
UNREADABLE_BODIES = [b"\xff\xfe\x00{", b"\x80abc", b'{"task": "\xe9"}', b"\xc3\x28", b"task: digits\n\xff"]
CONTENT_TYPES = [None, "text/plain", "application/x-yaml", "application/octet-stream",
                 "application/x-www-form-urlencoded", "application/json", "application/json; charset=latin-1"]


def test_unreadable_bodies_under_any_content_type_are_documented_4xx(tmp_path: Path):
    from fastapi.testclient import TestClient

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'api.db'}", study_concurrency=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        document = client.get("/openapi.json").json()
        taking_a_body = [(path, method, operation) for path, item in document["paths"].items()
                         for method, operation in item.items() if "requestBody" in operation]
        assert {path for path, _, _ in taking_a_body} >= {"/api/v1/studies", "/api/v1/specs/validate"}
        wrong = []
        for path, method, operation in taking_a_body:
            for body in UNREADABLE_BODIES:
                for content_type in CONTENT_TYPES:
                    headers = {"content-type": content_type} if content_type else {}
                    response = client.request(method.upper(), path, content=body, headers=headers)
                    documented = response.status_code < 500 and str(response.status_code) in operation["responses"]
                    if not documented or not isinstance(response.json().get("detail"), (str, list)):
                        wrong.append(f"{method.upper()} {path} {content_type} {body!r}: {response.status_code}")
        assert not wrong, "\n".join(wrong)
        assert client.get("/api/v1/studies").json()["total"] == 0
