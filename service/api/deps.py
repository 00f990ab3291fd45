"""Dependencies shared by the routes: settings, repositories, and the token check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from paretoml.service.api.reads import StudyReads
from paretoml.service.jobs import JobRepository
from paretoml.service.scheduler import JobScheduler
from paretoml.service.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="the server's PARETOML_API_TOKEN, when one is set")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_jobs(request: Request) -> JobRepository:
    return request.app.state.jobs  # type: ignore[no-any-return]


def get_reads(request: Request) -> StudyReads:
    return request.app.state.reads  # type: ignore[no-any-return]


def get_scheduler(request: Request) -> JobScheduler:
    return request.app.state.scheduler  # type: ignore[no-any-return]


def require_token(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Writing endpoints: the bearer token must match when the server has one."""
    expected = settings.token
    if expected is None:
        return
    if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


Jobs = Annotated[JobRepository, Depends(get_jobs)]
Reads = Annotated[StudyReads, Depends(get_reads)]
Scheduler = Annotated[JobScheduler, Depends(get_scheduler)]
Writer = Depends(require_token)
