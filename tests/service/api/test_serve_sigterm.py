"""``paretoml serve`` with a local Ray, ended by SIGTERM: nothing of its Ray session is left
running a few seconds later (Ray's DashboardAgent and RuntimeEnvAgent, ~95 MB each, used to
linger under PID 1 for 1-5 minutes), even when the signal comes while Ray is starting."""

from __future__ import annotations

import glob
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


def described(processes: list[psutil.Process]) -> list[str]:
    """Name, status, parent and working directory of each: what a failure needs to be read."""
    out = []
    for process in processes:
        try:
            with process.oneshot():
                out.append(f"{process.name()} (pid {process.pid}, {process.status()}, ppid {process.ppid()}, "
                           f"cwd {process.cwd()})")
        except psutil.Error:
            pass
    return out


def driver_connected(ray_dir: str, pid: int) -> bool:
    """The server's core worker has started: Ray opens its log as soon as it does."""
    return bool(glob.glob(f"{ray_dir}/session_*/logs/python-core-driver-*_{pid}.log"))


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
        # SIGTERM as early as it can hurt: both agents run and the server's driver has just
        # connected to Ray (ray.init has not returned, /health does not say "ok" yet). Ray's
        # driver used to take SIGTERM from then on and end the server at once, agents left.
        deadline = time.monotonic() + 300  # the raylet starts its agents beside it (slow on a busy machine)
        parent = psutil.Process(server.pid)
        while not (set(AGENTS) <= set(names(session := session_processes(parent)))
                   and driver_connected(ray_dir, server.pid)):
            assert time.monotonic() < deadline, (names(session), ray_status(base))
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=90)
    finally:
        if server.poll() is None:
            server.kill()
    deadline = time.monotonic() + 5  # "within a few seconds" of the server's exit
    while (left := alive(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    report = described(left)
    for process in left:  # a failed test leaves nothing behind either
        process.kill()
    output = server.stdout.read() if server.stdout else ""
    assert not left, (f"left running after the server exited (exit status {server.returncode}): {report}; "
                      f"the server's last output:\n{output[-3000:]}")
