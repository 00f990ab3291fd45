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
    budget = 30
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
