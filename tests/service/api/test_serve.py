"""``paretoml serve`` as a real process (uvicorn, a SQLite file, Ray): kill -9 it in the
middle of a study, start it again, and the study finishes by itself with nothing lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import optuna
import pytest
from optuna.trial import TrialState

from tests.service.api.conftest import synthetic_spec

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path: Path, url: str, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PARETOML_JOB_HEARTBEAT_S": "0.5"}
    env.pop("PARETOML_API_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "paretoml.service.cli", "serve", "--storage", url, "--port", str(port), *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_healthy(base: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("server never became healthy")


def completed(url: str, name: str) -> dict[int, tuple]:
    study = optuna.load_study(study_name=name, storage=url)
    return {t.number: (t.params, t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))}


def test_kill_9_mid_study_then_restart_resumes_it_to_exactly_its_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    budget = 16  # killed at 6 complete or more: 10 left for the restart to resume
    server = start_server(tmp_path, url, port, "--host", "0.0.0.0")
    try:
        wait_healthy(base, server)
        response = httpx.post(f"{base}/api/v1/studies",
                              json=synthetic_spec(n_trials=budget, task_options={"busy_ms": 250}), timeout=10)
        assert response.status_code == 202
        study = response.json()["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            progress = httpx.get(f"{base}/api/v1/studies/{study}", timeout=10).json()["progress"]
            if progress["complete"] >= 6 and progress["running"]:
                break
            time.sleep(0.1)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        banner = server.stdout.read() if server.stdout else ""
    finally:
        if server.poll() is None:
            server.kill()
    # without a token the server refused the public address and said so
    assert "not binding 0.0.0.0, listening on 127.0.0.1 only" in banner
    before = completed(url, study)
    assert 6 <= len(before) < budget

    restarted = start_server(tmp_path, url, port)
    try:
        wait_healthy(base, restarted)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            body = httpx.get(f"{base}/api/v1/studies/{study}", timeout=10).json()
            if body["status"] in ("completed", "failed"):
                break
            time.sleep(0.3)
        assert body["status"] == "completed", body
        assert body["runs"] == 2 and body["progress"]["complete"] == budget
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=60)
    after = completed(url, study)
    assert len(after) == budget
    assert all(after[number] == record for number, record in before.items())
    trials = optuna.load_study(study_name=study, storage=url).trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_two_servers_share_one_postgres_queue_and_never_run_a_study_twice(tmp_path, postgres_server):
    # the deployment for a cluster: several `paretoml serve` on one PostgreSQL database, each
    # with its own Ray; a job is claimed by one UPDATE, so each study runs on exactly one server
    from paretoml.service.jobs import JobRepository

    url = postgres_server.create_database()
    ports = [free_port(), free_port()]
    servers = []
    for i, port in enumerate(ports):
        (tmp_path / f"s{i}").mkdir()
        servers.append(start_server(tmp_path / f"s{i}", url, port, "--concurrency", "1"))
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    budget = 8
    try:
        for base, server in zip(bases, servers):
            wait_healthy(base, server)
        ids = []
        for k in range(4):
            spec = synthetic_spec(name=f"shared-{k}", n_trials=budget, seed=k, task_options={"busy_ms": 400})
            response = httpx.post(f"{bases[k % 2]}/api/v1/studies", json=spec, timeout=10)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            states = [httpx.get(f"{bases[0]}/api/v1/studies/{i}", timeout=10).json()["status"] for i in ids]
            if all(s in ("completed", "failed") for s in states):
                break
            time.sleep(0.5)
        assert states == ["completed"] * 4, states
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(timeout=90)
    jobs = JobRepository(url)
    pids = {str(s.pid) for s in servers}
    runners = set()
    for study in ids:
        job = jobs.get(study)
        assert job.runs == 1, (study, job.runs)  # claimed once, never taken over
        runners.add(job.owner.split(":")[2])
        assert len(completed(url, study)) == budget
        assert not [t for t in optuna.load_study(study_name=study, storage=url).trials
                    if t.state != TrialState.COMPLETE]
    assert runners == pids  # both servers ran studies from the one queue
