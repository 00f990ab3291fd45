"""The error answers of the API, declared in OpenAPI from one table.

Every operation lists the errors it can send, all with the one body ``schemas.ApiError``::

    @router.get("/studies/{study_id}/export", responses=errors(404, 422, 503))
    @router.post("/things", dependencies=[Writer], responses=errors(*BODY_ERRORS, 401, 503))

Which codes an operation needs follows from its shape, and ``tests/service/api/test_contract.py``
checks every operation against these rules, so a forgotten one fails a test by name:

- a JSON request body: ``BODY_ERRORS`` (400 unreadable body, 413 too large, 422 invalid);
- any path or query parameter: 422;
- a writing endpoint (``dependencies=[Writer]``): 401;
- a ``{study_id}`` in the path: 404;
- a dependency on the database (``Jobs``, ``Reads``, ``Scheduler``): 503.
"""

from __future__ import annotations

from typing import Any

from paretoml.service.api.schemas import ApiError

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "the request body cannot be read (malformed JSON, not UTF-8)",
    401: "missing or wrong bearer token (writing endpoints, when the server has an API token)",
    404: "no study with this id",
    409: "the study's state does not allow this (e.g. deleting a queued or running study)",
    413: "request body larger than the server's limit (PARETOML_MAX_BODY_BYTES)",
    422: "invalid input: one entry per invalid field, with its location",
    503: "the database cannot be reached; nothing was changed",
}

BODY_ERRORS = (400, 413, 422)

_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
}


def errors(*codes: int, descriptions: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for these error codes; ``descriptions`` overrides a code's
    general description with what it means for this operation."""
    unknown = sorted(set(codes) - ERROR_DESCRIPTIONS.keys())
    if unknown:
        raise ValueError(f"no shared description for status {unknown}; add it to ERROR_DESCRIPTIONS")
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        response: dict[str, Any] = {"model": ApiError,
                                    "description": (descriptions or {}).get(code, ERROR_DESCRIPTIONS[code])}
        if code in _HEADERS:
            response["headers"] = _HEADERS[code]
        out[code] = response
    return out
