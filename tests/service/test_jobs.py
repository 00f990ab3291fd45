"""The jobs table's state machine, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from paretoml.service.db.models import Job, utcnow
from paretoml.service.jobs import (
    JobLease,
    JobNotFoundError,
    JobRepository,
    JobStateError,
    JobStatus,
    owner_is_dead,
    owner_name,
)
from paretoml.service.spec import parse_spec

SPEC = parse_spec({"task": "synthetic", "knobs": [{"kind": "bitwidth"}], "objectives": [{"name": "fidelity"}],
                   "n_trials": 3, "name": "j"})


def age_heartbeat(jobs: JobRepository, job_id: str, seconds: float) -> None:
    with jobs._sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def test_claims_are_exclusive_and_in_submission_order(storage_url):
    jobs = JobRepository(storage_url)
    first, second = jobs.submit(SPEC), jobs.submit(SPEC)
    claimed: list[str] = []

    def claim() -> None:
        job = JobRepository(storage_url).claim_next(owner_name("server"))
        if job is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted([first.id, second.id])  # each job claimed exactly once
    assert jobs.get(first.id).status == "running" and jobs.get(first.id).runs == 1
    assert jobs.claim_next("x") is None


def test_a_silent_server_loses_its_job_and_a_stopping_one_ends_stopped(storage_url):
    jobs = JobRepository(storage_url)
    a, b = jobs.submit(SPEC), jobs.submit(SPEC)
    owner = "server:elsewhere:1:abcd"  # another host: only the heartbeat can tell it is gone
    jobs.claim_next(owner), jobs.claim_next(owner)
    jobs.request_stop(b.id)
    assert jobs.requeue_orphans(grace_s=5) == []  # fresh heartbeats: left alone
    age_heartbeat(jobs, a.id, 60), age_heartbeat(jobs, b.id, 60)
    assert jobs.requeue_orphans(grace_s=5) == [a.id]
    assert jobs.get(a.id).status == "queued" and jobs.get(a.id).owner is None
    assert jobs.get(b.id).status == "stopped"


def test_a_dead_local_owner_is_seen_without_waiting_for_the_grace_period(storage_url):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"server:{socket.gethostname()}:{child.stdout.strip()}:0000"
    assert owner_is_dead(dead) and not owner_is_dead(owner_name("server"))
    assert not owner_is_dead("server:elsewhere:1:abcd") and not owner_is_dead(None)
    jobs = JobRepository(storage_url)
    job = jobs.submit(SPEC)
    jobs.claim_next(dead)
    assert jobs.requeue_orphans(grace_s=3600) == [job.id]


def test_cli_jobs_are_registered_refused_while_alive_and_stopped_when_their_process_dies(storage_url):
    jobs = JobRepository(storage_url)
    me = owner_name("cli")
    jobs.take_for_cli("cli-study", SPEC, me, grace_s=30, fresh=True)
    job = jobs.get("cli-study")
    assert (job.status, job.source, job.owner, job.runs) == ("running", "cli", me, 1)
    with pytest.raises(JobStateError, match="already exists"):
        jobs.take_for_cli("cli-study", SPEC, owner_name("cli"), grace_s=30, fresh=True)
    with pytest.raises(JobStateError, match="is running"):
        jobs.take_for_cli("cli-study", SPEC, owner_name("cli"), grace_s=30, fresh=False)
    age_heartbeat(jobs, "cli-study", 60)
    assert jobs.requeue_orphans(grace_s=5) == []  # a CLI study is not taken over by a server...
    assert jobs.get("cli-study").status == "stopped"  # ...it is stopped, resumable from anywhere
    jobs.take_for_cli("cli-study", SPEC, me, grace_s=30, fresh=False)
    assert jobs.get("cli-study").runs == 2
    assert jobs.finish("cli-study", JobStatus.completed)
    assert jobs.get("cli-study").status == "completed"


def test_a_lease_beats_and_passes_a_stop_request_on(storage_url):
    jobs = JobRepository(storage_url)
    me = owner_name("cli")
    jobs.take_for_cli("leased", SPEC, me, grace_s=30, fresh=True)
    age_heartbeat(jobs, "leased", 60)
    stop = threading.Event()
    with JobLease(jobs, "leased", me, stop, interval=0.05):
        assert not stop.wait(0.3)
        assert jobs.requeue_orphans(grace_s=5) == [] and jobs.get("leased").status == "running"
        jobs.request_stop("leased")
        assert stop.wait(5)


def test_unknown_ids_and_refusals(storage_url):
    jobs = JobRepository(storage_url)
    with pytest.raises(JobNotFoundError):
        jobs.get("nope")
    with pytest.raises(JobNotFoundError):
        jobs.request_stop("nope")
    job = jobs.submit(SPEC)
    with pytest.raises(JobStateError, match="cannot delete .* it is queued"):
        jobs.delete(job.id)
    with pytest.raises(JobStateError, match="cannot resume"):
        jobs.resume(job.id)
    assert JobRepository(storage_url).get(job.id).status == "queued"
