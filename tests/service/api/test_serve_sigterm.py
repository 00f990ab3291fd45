"""``paretoml serve`` with a local Ray, ended by SIGTERM: nothing of its Ray session is left
running a few seconds later (Ray's DashboardAgent and RuntimeEnvAgent, ~95 MB each, used to
linger under PID 1 for 1-5 minutes)."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.service.api.test_serve import free_port, start_server, wait_healthy

pytestmark = pytest.mark.slow

AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def session_processes(server: psutil.Process) -> list[psutil.Process]:
    """The server's Ray session: its descendants (GCS, raylet, agents, workers), while it runs."""
    try:
        return [p for p in server.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.Error:
            pass
    return running


def names(processes: list[psutil.Process]) -> list[str]:
    out = []
    for process in processes:
        try:
            out.append(process.name())
        except psutil.Error:
            pass
    return out


def ray_status(base: str) -> str | None:
    try:
        return httpx.get(f"{base}/api/v1/health", timeout=30).json()["ray"]
    except httpx.TransportError:  # a busy machine: ask again
        return None


@pytest.fixture()
def ray_dir():
    path = tempfile.mkdtemp(prefix="pml-sig-")  # short: Ray's socket paths are limited to 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sigterm_ends_the_servers_ray_agents_with_it(tmp_path: Path, ray_dir: str, monkeypatch):
    monkeypatch.setenv("PARETOML_RAY_TEMP_DIR", ray_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, f"sqlite:///{tmp_path / 'serve.db'}", port)
    try:
        wait_healthy(base, server, timeout=180)
        deadline = time.monotonic() + 240
        while ray_status(base) != "ok":
            assert time.monotonic() < deadline, "Ray never came up"
            time.sleep(0.5)
        deadline = time.monotonic() + 180  # the raylet starts its agents beside it (slow on a busy machine)
        parent = psutil.Process(server.pid)
        while not set(AGENTS) <= set(names(session := session_processes(parent))):
            assert time.monotonic() < deadline, names(session)
            time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=90)
    finally:
        if server.poll() is None:
            server.kill()
    deadline = time.monotonic() + 5  # "within a few seconds" of the server's exit
    while (left := alive(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in left:  # a failed test leaves nothing behind either
        process.kill()
    assert not left, f"left running after the server exited: {names(left)}"
