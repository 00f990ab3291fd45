"""The jobs table: what was submitted, and where each job stands.

Status moves only along these edges (each move is one conditional UPDATE, so two
servers, or a request racing the scheduler, can never both win)::

    queued --claim--> running --> completed | failed
    running --stop--> stopping --> stopped
    queued --stop--> stopped
    stopped | failed --resume--> queued
    running (server silent past the grace period) --> queued   (taken over, resumed)

Studies run from the command line (``paretoml run``/``resume``) are jobs too (source
"cli"), so the API and dashboard show them and can stop them; a CLI job whose process
died becomes ``stopped`` rather than being taken over by a server.
"""

from __future__ import annotations

import enum
import os
import re
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from paretoml.service.db.models import FrontierPoint, FrontierSnapshot, Job, utcnow
from paretoml.service.db.session import session_factory
from paretoml.service.spec import StudySpec


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    stopping = "stopping"
    stopped = "stopped"
    completed = "completed"
    failed = "failed"


ACTIVE = (JobStatus.queued, JobStatus.running, JobStatus.stopping)
RESUMABLE = (JobStatus.stopped, JobStatus.failed)

#: ``Job.source`` of a study run by ``paretoml run``/``resume`` in its own process.
CLI_SOURCE = "cli"
#: ``Job.source`` of a study made by ``paretoml.search``: listed and read by the API and the
#: dashboard, never run by a server (its model lives in the user's Python process).
PYTHON_SOURCE = "python"


class JobNotFoundError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class JobStateError(RuntimeError):
    """The job is in a state that does not allow the action (HTTP 409)."""


@dataclass(frozen=True)
class Page:
    items: list[Job]
    total: int


def new_job_id(spec: StudySpec) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", spec.name or spec.task)[:80]
    return f"{stem}-{secrets.token_hex(4)}"


def owner_name(kind: str) -> str:
    """``kind:host:pid:nonce``: who runs a job, parseable so a dead local owner is seen at once."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def owner_is_dead(owner: str | None) -> bool:
    """True only when the owner was a process on this host that no longer exists."""
    parts = (owner or "").split(":")
    if len(parts) != 4 or parts[1] != socket.gethostname() or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands timezone-aware columns back naive; they were written in UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def _with_utc_times(job: Job) -> Job:
    for name in ("created_at", "started_at", "finished_at", "heartbeat_at"):
        setattr(job, name, as_utc(getattr(job, name)))
    return job


class JobRepository:
    def __init__(self, url: str) -> None:
        self._sessions: sessionmaker[Session] = session_factory(url)

    # -- reads ---------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        with self._sessions() as session:
            job = session.get(Job, job_id)
        if job is None:
            raise JobNotFoundError(f"no study with id {job_id!r}")
        return _with_utc_times(job)

    def list(self, status: JobStatus | None = None, offset: int = 0, limit: int = 50) -> Page:
        query = select(Job)
        count = select(func.count()).select_from(Job)
        if status is not None:
            query = query.where(Job.status == status.value)
            count = count.where(Job.status == status.value)
        with self._sessions() as session:
            total = session.scalar(count) or 0
            items = list(session.scalars(query.order_by(Job.created_at.desc(), Job.id).offset(offset).limit(limit)))
        return Page([_with_utc_times(job) for job in items], total)

    # -- writes --------------------------------------------------------------------------
    def submit(self, spec: StudySpec) -> Job:
        job = Job(id=new_job_id(spec), status=JobStatus.queued.value, spec=spec.model_dump(mode="json"),
                  n_trials=spec.n_trials, task=spec.task, sampler=spec.sampler.name, source="api", runs=0,
                  created_at=utcnow())
        with self._sessions.begin() as session:
            session.add(job)
        return job

    def take_for_cli(self, job_id: str, spec: StudySpec, owner: str, grace_s: float, fresh: bool,
                     source: str = CLI_SOURCE) -> None:
        """Record that this process runs study ``job_id`` (new, or resumed from the CLI).

        Refuses (JobStateError) a job that a live server or process is running, or that is
        queued for a server.
        """
        now = utcnow()
        with self._sessions.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                session.add(Job(id=job_id, status=JobStatus.running.value, spec=spec.model_dump(mode="json"),
                                n_trials=spec.n_trials, task=spec.task, sampler=spec.sampler.name, source=source,
                                owner=owner, runs=1, created_at=now, started_at=now, heartbeat_at=now))
                return
            if fresh:
                raise JobStateError(f"study {job_id!r} already exists; continue it with `paretoml resume {job_id}`")
            beat = as_utc(job.heartbeat_at)
            alive = job.status in (JobStatus.running.value, JobStatus.stopping.value) and beat is not None \
                and beat > now - timedelta(seconds=grace_s) and not owner_is_dead(job.owner)
            if alive or job.status == JobStatus.queued.value:
                raise JobStateError(f"study {job_id!r} is {job.status} on {job.owner or 'a server'}; "
                                    "stop it there first")
            job.status, job.owner, job.source = JobStatus.running.value, owner, source
            job.started_at, job.heartbeat_at, job.finished_at, job.error = now, now, None, None
            job.runs += 1

    def _move(self, job_id: str, sources: tuple[JobStatus, ...], target: JobStatus, **values: Any) -> bool:
        with self._sessions.begin() as session:
            result = session.execute(
                update(Job).where(Job.id == job_id, Job.status.in_([s.value for s in sources]))
                .values(status=target.value, **values)
            )
            return result.rowcount == 1

    def _refuse(self, job_id: str, action: str) -> None:
        status = self.get(job_id).status  # raises JobNotFoundError for an unknown id
        raise JobStateError(f"cannot {action} study {job_id!r}: it is {status}")

    def claim_next(self, owner: str) -> Job | None:
        """Take the oldest queued job for this server, or None."""
        with self._sessions() as session:
            ids = list(session.scalars(select(Job.id).where(Job.status == JobStatus.queued.value)
                                       .order_by(Job.created_at, Job.id).limit(8)))
        for job_id in ids:
            now = utcnow()
            if self._move(job_id, (JobStatus.queued,), JobStatus.running, owner=owner, source="api", started_at=now,
                          heartbeat_at=now, finished_at=None, error=None, runs=Job.runs + 1):
                return self.get(job_id)
        return None

    def beat(self, job_ids: list[str], owner: str) -> dict[str, str]:
        """Refresh this server's jobs; returns their status (a stop request shows here)."""
        if not job_ids:
            return {}
        with self._sessions.begin() as session:
            session.execute(update(Job).where(Job.id.in_(job_ids), Job.owner == owner)
                            .values(heartbeat_at=utcnow()))
            rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids)))
            return {job_id: status for job_id, status in rows}

    def finish(self, job_id: str, target: JobStatus, error: str | None = None) -> bool:
        return self._move(job_id, (JobStatus.running, JobStatus.stopping), target,
                          finished_at=utcnow(), error=error)

    def requeue(self, job_id: str, owner: str) -> bool:
        """Hand a job this server was running back to the queue (server shutting down)."""
        with self._sessions.begin() as session:
            result = session.execute(update(Job).where(Job.id == job_id, Job.owner == owner,
                                                       Job.status == JobStatus.running.value)
                                     .values(status=JobStatus.queued.value, owner=None))
            return result.rowcount == 1

    def requeue_orphans(self, grace_s: float) -> list[str]:
        """Queue again the running jobs whose server went silent (or, on this host, whose
        process is gone); stopping ones, and CLI ones, become stopped."""
        cutoff = utcnow() - timedelta(seconds=grace_s)
        with self._sessions() as session:
            rows = list(session.execute(
                select(Job.id, Job.status, Job.heartbeat_at, Job.source, Job.owner)
                .where(Job.status.in_([JobStatus.running.value, JobStatus.stopping.value]))
            ))
        taken = []
        for job_id, status, beat, source, owner in rows:
            if beat is not None and as_utc(beat) > cutoff and not owner_is_dead(owner):  # type: ignore[operator]
                continue
            own_process = source in (CLI_SOURCE, PYTHON_SOURCE)
            if status == JobStatus.stopping.value or own_process:
                self._move(job_id, (JobStatus.running, JobStatus.stopping), JobStatus.stopped, finished_at=utcnow(),
                           error="its process ended without finishing" if own_process else None)
            elif self._move(job_id, (JobStatus.running,), JobStatus.queued, owner=None):
                taken.append(job_id)
        return taken

    def request_stop(self, job_id: str) -> JobStatus:
        if self._move(job_id, (JobStatus.queued,), JobStatus.stopped, finished_at=utcnow()):
            return JobStatus.stopped
        if self._move(job_id, (JobStatus.running,), JobStatus.stopping):
            return JobStatus.stopping
        self._refuse(job_id, "stop")
        raise AssertionError("unreachable")

    def resume(self, job_id: str) -> None:
        if self.get(job_id).source == PYTHON_SOURCE:
            raise JobStateError(f"cannot resume study {job_id!r} here: it was made by paretoml.search from a model "
                                "given in Python; resume it from Python")
        if not self._move(job_id, RESUMABLE, JobStatus.queued, error=None, finished_at=None, owner=None):
            self._refuse(job_id, "resume")

    def delete(self, job_id: str) -> None:
        """Forget a job that is not active; the caller deletes its Optuna study."""
        with self._sessions.begin() as session:
            result = session.execute(
                delete(Job).where(Job.id == job_id, Job.status.not_in([s.value for s in ACTIVE]))
            )
            if result.rowcount == 1:
                session.execute(delete(FrontierPoint).where(FrontierPoint.study_name == job_id))
                session.execute(delete(FrontierSnapshot).where(FrontierSnapshot.study_name == job_id))
                return
        self._refuse(job_id, "delete")


class JobLease:
    """Beats for one job from a thread while a process runs it, and passes a stop request
    (made through the API) on to ``stop_event``."""

    def __init__(self, jobs: JobRepository, job_id: str, owner: str, stop_event: threading.Event,
                 interval: float = 2.0) -> None:
        self._jobs, self._job_id, self._owner = jobs, job_id, owner
        self._stop_event = stop_event
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="paretoml-job-lease", daemon=True)

    def __enter__(self) -> JobLease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._done.wait(self._interval):
            try:
                status = self._jobs.beat([self._job_id], self._owner).get(self._job_id)
            except Exception:  # a missed beat is retried next interval
                continue
            if status == JobStatus.stopping.value:
                self._stop_event.set()
