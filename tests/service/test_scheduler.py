"""The scheduler's Ray start, on a real ``paretoml serve`` and a real Ray: a start that fails
after Ray has spawned its processes is cleaned up before each retry (the number of this
server's Ray processes stays bounded), ``/health`` says why Ray is down, and a queued study
waits, then runs once Ray is up, even with the server's working directory gone.

Faults come from ``tests/service/ray_faults.py``. Only this test's processes are counted:
the server's process tree, and any process whose command line names the server's own Ray
temp dir or whose working directory is the server's own scratch directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import optuna
import psutil
import pytest
from optuna.trial import TrialState

from paretoml.service.ray_runtime import RayStartError
from paretoml.service.scheduler import JobScheduler
from paretoml.service.settings import Settings
from tests.service.api.conftest import synthetic_spec

LAUNCHER = Path(__file__).with_name("ray_faults.py")
FAILED = "cannot start or join Ray (attempt"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    cwd: Path
    ray_dir: Path
    log: Path

    def get(self, path: str) -> Any:
        return httpx.get(self.base + path, timeout=10).json()

    def failures(self) -> int:
        return self.log.read_text(errors="replace").count(FAILED)

    def ray_processes(self) -> list[psutil.Process]:
        """This server's Ray processes, orphans included; never another engineer's."""
        found: dict[int, psutil.Process] = {}
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                found[child.pid] = child
        except psutil.Error:
            pass
        for process in psutil.process_iter(["cmdline", "cwd"]):
            command = " ".join(process.info["cmdline"] or [])
            if str(self.ray_dir) in command or process.info["cwd"] == str(self.cwd):
                found[process.pid] = process
        found.pop(self.process.pid, None)
        alive = []
        for process in found.values():
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.Error:
                pass
        return alive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def scratch() -> Iterator[Path]:
    # directly under /tmp and short: Ray's socket paths under the temp dir must stay < 108 bytes
    folder = Path(tempfile.mkdtemp(prefix="prl-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def start(scratch: Path, failures: str, fault: str, retry_base_s: float, retry_max_s: float,
          database: str = "sqlite:///studies.db", ray_dir: str = "ray", cwd: Path | None = None) -> Server:
    cwd = cwd or scratch
    cwd.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "PARETOML_DATABASE_URL": database, "PARETOML_RAY_TEMP_DIR": ray_dir,
           "PARETOML_RAY_RETRY_BASE_S": str(retry_base_s), "PARETOML_RAY_RETRY_MAX_S": str(retry_max_s),
           "PARETOML_JOB_HEARTBEAT_S": "0.5", "PARETOML_WORKER_CPUS": "0.5", "PARETOML_STUDY_CONCURRENCY": "1",
           "PARETOML_TEST_RAY_FAILURES": failures, "PARETOML_TEST_RAY_FAULT": fault,
           "RAY_DISABLE_USAGE_STATS": "1"}
    for name in ("PARETOML_API_TOKEN", "PARETOML_RAY_ADDRESS", "RAY_ADDRESS"):
        env.pop(name, None)
    log = scratch / "serve.log"
    process = subprocess.Popen([sys.executable, str(LAUNCHER), "serve", "--port", str(port)], cwd=cwd, env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", cwd, Path(os.path.abspath(cwd / ray_dir)), log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            server.get("/api/v1/health")
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    stop(server)
    raise AssertionError(f"server never answered:\n{log.read_text()[-3000:]}")


def stop(server: Server) -> list[psutil.Process]:
    """Stop the server; end (and return) any Ray process of it still running afterwards."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
    # Ray's processes end a moment after their driver (seconds on a loaded machine)
    deadline = time.monotonic() + 15
    left = server.ray_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = server.ray_processes()
    for process in left:
        try:
            process.kill()
        except psutil.Error:
            pass
    return left


def is_gcs(process: psutil.Process) -> bool:
    try:
        return process.name() == "gcs_server"
    except psutil.Error:
        return False


@pytest.mark.slow
def test_a_start_that_fails_after_spawning_leaves_at_most_one_cluster_across_retries(scratch):
    # the "node" fault: a whole local cluster is up, but ray.init never held it, so
    # ray.shutdown() alone cannot end it (tests/service/test_ray_runtime.py has both faults)
    # four retries prove what ten did: a leak shows as a second cluster from the second attempt on
    retries = 4
    server = start(scratch, failures="always", fault="node", retry_base_s=0.2, retry_max_s=0.4)
    try:
        created = httpx.post(server.base + "/api/v1/studies", json=synthetic_spec(n_trials=4), timeout=10)
        assert created.status_code == 202, created.text
        study = created.json()["id"]
        peak, peak_gcs, gcs_seen = 0, 0, set()
        deadline = time.monotonic() + 150
        while server.failures() < retries:
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            assert server.process.poll() is None, server.log.read_text()[-3000:]
            processes = server.ray_processes()
            gcs = [p.pid for p in processes if is_gcs(p)]
            gcs_seen.update(gcs)
            peak, peak_gcs = max(peak, len(processes)), max(peak_gcs, len(gcs))
            time.sleep(0.1)
        health = server.get("/api/v1/health")
        job = server.get(f"/api/v1/studies/{study}")
    finally:
        left = stop(server)
    log = server.log.read_text(errors="replace")
    # the fault came after Ray had spawned its cluster: a new GCS on (nearly) every attempt
    assert len(gcs_seen) >= retries // 2, (gcs_seen, log[-2000:])  # half, as with ten
    # ... and each was ended before the next attempt: never two clusters at once
    assert peak_gcs == 1, (peak_gcs, log[-2000:])
    assert peak <= 12, peak  # one cluster: GCS, raylet, monitors, agents, a few idle workers
    assert health["status"] == "ok" and health["ray"].startswith("down: "), health
    assert "injected fault" in health["ray"] and health["queued"] == 1
    assert job["status"] == "queued"  # nothing is lost: the study waits for Ray
    attempts = [line for line in log.splitlines() if FAILED in line]
    assert len(attempts) >= retries and "Traceback" not in log  # one line per attempt, not a traceback
    assert not left, [p.pid for p in left]  # and none left once the server has stopped


@pytest.mark.slow
def test_b_ray_up_on_the_second_attempt_runs_the_queued_study_without_its_working_directory(scratch):
    # relative paths, resolved at start; the working directory is removed while Ray is down
    (scratch / "data").mkdir()
    cwd = scratch / "cwd"
    budget = 6
    server = start(scratch, failures="1", fault="connect", retry_base_s=3.0, retry_max_s=3.0,
                   database="sqlite:///../data/studies.db", ray_dir="../ray", cwd=cwd)
    try:
        created = httpx.post(server.base + "/api/v1/studies", json=synthetic_spec(n_trials=budget), timeout=10)
        assert created.status_code == 202, created.text
        study = created.json()["id"]
        deadline = time.monotonic() + 60
        while not (health := server.get("/api/v1/health"))["ray"].startswith("down: "):
            assert time.monotonic() < deadline and health["ray"] == "starting", health
            time.sleep(0.1)
        assert server.get(f"/api/v1/studies/{study}")["status"] == "queued"
        shutil.rmtree(cwd)
        deadline = time.monotonic() + 180
        while (body := server.get(f"/api/v1/studies/{study}"))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, (body, server.log.read_text()[-3000:])
            time.sleep(0.3)
        health = server.get("/api/v1/health")
    finally:
        left = stop(server)
    log = server.log.read_text(errors="replace")
    assert body["status"] == "completed", (body, log[-3000:])
    assert health["ray"] == "ok"
    assert log.count(FAILED) == 1 and "Ray is up after 1 failed attempt" in log
    url = f"sqlite:///{scratch / 'data' / 'studies.db'}"  # where the relative URL pointed at start
    trials = optuna.load_study(study_name=study, storage=url).get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == budget
    assert list((scratch / "ray").glob("session_*"))  # Ray ran under the temp dir resolved at start
    assert not left, [p.pid for p in left]


def test_failed_starts_back_off_exponentially_up_to_the_cap_with_one_line_each(tmp_path, monkeypatch, caplog):
    # the bookkeeping of the retries alone; the tests above run them on a real Ray
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'jobs.db'}", ray_retry_base_s=0.5, ray_retry_max_s=3.0)
    scheduler = JobScheduler(settings)
    assert scheduler.ray_status == "starting"
    outcomes = [RayStartError("OSError: port taken", cleaned=7)] * 5 + [None]

    def ensure_ray() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(scheduler, "ensure_ray", ensure_ray)
    delays = []
    with caplog.at_level("WARNING", logger="paretoml.scheduler"):
        for _ in range(5):
            before = time.monotonic()
            scheduler._try_ray()
            delays.append(round(scheduler._next_ray_attempt - before, 1))
            assert scheduler.ray_status.startswith("down: OSError: port taken (attempt ")
            assert not scheduler.ray_ready.is_set()
        scheduler._try_ray()
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert scheduler.ray_status == "ok" and scheduler.ray_ready.is_set()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6 and not any(r.exc_info for r in caplog.records)  # one line each, no traceback
    assert lines[0] == "cannot start or join Ray (attempt 1): OSError: port taken; ended 7 leftover process(es); " \
                       "next attempt in 0.5 s"
    assert lines[-1] == "Ray is up after 5 failed attempt(s)"
    assert JobScheduler(Settings(database_url=settings.database_url, study_concurrency=0)).ray_status == "off"
