"""Exception handlers: every error is JSON ``{"detail": ...}`` with a 4xx status that
says what was wrong; an unexpected error is logged here and answered 500 with no trace.
A 405 lists in ``Allow`` every method served at that path (Starlette names only those of
the first route it matched, e.g. ``POST`` for ``/studies`` although GET is served too).
A body sent with a content type other than JSON reaches validation as raw bytes: it is 400
when it is not UTF-8 (FastAPI's own handler would fail echoing it, a 500), else 422."""

from __future__ import annotations

import logging

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from paretoml.service.jobs import JobNotFoundError, JobStateError
from paretoml.service.storage import StorageError

log = logging.getLogger("paretoml.api")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at this request's path: asked of each route, as for a
    request with that method (mounted apps, such as static files, are left out: they match
    any method)."""
    routes = [route for route in app.router.routes if not isinstance(route, Mount)]
    return [method for method in _METHODS
            if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)]


NOT_UTF8 = "the request body is not UTF-8 text"


def _not_utf8(value: Any) -> bool:
    if not isinstance(value, bytes):
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(_not_utf8(error.get("input")) for error in errors):
            return JSONResponse({"detail": NOT_UTF8}, status_code=400)
        # bytes left in an error (a non-JSON body) are shown as text, never decoded strictly
        encoded = jsonable_encoder(errors, custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")})
        return JSONResponse({"detail": encoded}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            methods = allowed_methods(app, request.scope)
            if methods:
                exc.headers = {**(exc.headers or {}), "Allow": ", ".join(methods)}
        return await http_exception_handler(request, exc)

    @app.exception_handler(JobNotFoundError)
    async def _not_found(request: Request, exc: JobNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(JobStateError)
    async def _conflict(request: Request, exc: JobStateError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StorageError)
    async def _unavailable(request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse({"detail": f"database unavailable: {exc}"}, status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)
