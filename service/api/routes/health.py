"""``/health``: is the server up, can it reach its database, and is its Ray runtime up."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter

from paretoml.service.api import schemas
from paretoml.service.api.deps import Jobs, Scheduler
from paretoml.service.api.responses import errors
from paretoml.service.jobs import JobStatus

router = APIRouter(tags=["health"])


def _version() -> str:
    try:
        return version("paretoml")
    except PackageNotFoundError:
        return "unknown"


@router.get("/health", response_model=schemas.Health, responses=errors(503))
def health(jobs: Jobs, scheduler: Scheduler) -> schemas.Health:
    queued = jobs.list(JobStatus.queued, 0, 1).total  # a failing database answers 503 from here
    return schemas.Health(status="ok", version=_version(), database="ok", ray=scheduler.ray_status,
                          studies_running_here=len(scheduler.running), queued=queued)
