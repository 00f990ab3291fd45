"""Exception handlers: every error is JSON ``{"detail": ...}`` with a 4xx status that
says what was wrong; an unexpected error is logged here and answered 500 with no trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from paretoml.service.jobs import JobNotFoundError, JobStateError
from paretoml.service.storage import StorageError

log = logging.getLogger("paretoml.api")


def install_error_handlers(app: FastAPI) -> None:
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
