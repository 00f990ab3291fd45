"""End-to-end fixtures: a real ``paretoml serve`` on a free loopback port with its own
SQLite file, seeded through the API with a real multi-objective study, and Debian's
Chromium (``/usr/bin/chromium``) driven by Playwright; never Playwright's own browsers.

Every page a test opens records its console: an error there fails the test (the only
errors a test may allow are the browser's notes on HTTP statuses that test provokes).
Screenshots go to the test run's temporary directory and are copied to
``$PARETOML_E2E_SHOTS`` (default ``/tmp/dashboard-shots``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
PARETOML = str(Path(sys.executable).with_name("paretoml"))

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (apt install chromium)",
                allow_module_level=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: drives the dashboard in a real browser against a real server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


# -- the server ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    token: str | None
    process: subprocess.Popen[bytes]
    log: Path
    seeded: dict[str, Any] = field(default_factory=dict)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def wait_for(self, study: str, statuses: set[str], timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = self.get(f"/api/v1/studies/{study}")
            if body["status"] in statuses:
                return body
            time.sleep(0.3)
        raise AssertionError(f"{study} never reached {statuses}: {body.get('status')} {body.get('progress')}\n"
                             f"{self.log.read_text()[-3000:]}")


def start_server(folder: Path, token: str | None = None, concurrency: int = 1, extra_env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> Server:
    """``paretoml serve`` (or ``command``, e.g. the CLI with a fault injected) in ``folder``,
    with ``extra_env`` added to its environment."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "PARETOML_DATABASE_URL": f"sqlite:///{folder / 'studies.db'}", "PARETOML_PORT": str(port),
           "PARETOML_HOST": "127.0.0.1", "PARETOML_STUDY_CONCURRENCY": str(concurrency),
           "PARETOML_WORKERS_PER_STUDY": "1", "PARETOML_WORKER_CPUS": "0.5", "PARETOML_JOB_HEARTBEAT_S": "0.5",
           "PARETOML_CACHE_DIR": os.environ.get("PARETOML_CACHE_DIR") or str(folder / "cache"),
           "RAY_DISABLE_USAGE_STATS": "1"}
    env.pop("PARETOML_API_TOKEN", None)
    if token:
        env["PARETOML_API_TOKEN"] = token
    env.update(extra_env or {})
    log = folder / "serve.log"
    process = subprocess.Popen(command or [PARETOML, "serve"], env=env, cwd=folder, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", token, process, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            server.get("/api/v1/health")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            if process.poll() is not None:
                raise RuntimeError(f"paretoml serve exited {process.returncode}:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"paretoml serve did not answer in 90 s:\n{log.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(10)


SEED_STUDY = {
    "name": "e2e-seed",
    "task": "synthetic",
    "task_options": {"width": 48},
    "knobs": [{"kind": "bitwidth", "choices": [2, 3, 4, 6, 8, 16]},
              {"kind": "prune", "method": "structured", "low": 0.0, "high": 0.75, "step": 0.125}],
    "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}, {"name": "latency_ms"}],
    "constraints": [{"kind": "model_bytes", "max_bytes": 1200}],
    "measure": {"latency_warmup": 1, "latency_repeats": 3},
    "sampler": {"name": "random"},
    "baselines": [8, 4],
    "n_trials": 36,
    "seed": 0,
}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server, with one completed three-objective study submitted through the API."""
    started = start_server(tmp_path_factory.mktemp("e2e-server"))
    try:
        created = started.request("POST", "/api/v1/studies", SEED_STUDY)
        started.seeded = started.wait_for(created["id"], {"completed", "failed"})
        assert started.seeded["status"] == "completed", started.seeded
        yield started
    finally:
        stop_server(started)


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with an API token that runs no studies (so it starts no Ray)."""
    started = start_server(tmp_path_factory.mktemp("e2e-token-server"), token="e2e-s3cret", concurrency=0)
    try:
        yield started
    finally:
        stop_server(started)


# -- the browser ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@dataclass
class Console:
    messages: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, fragment: str) -> None:
        """An error the test provokes on purpose, e.g. 'status of 422' for a bad spec."""
        self.allowed.append(fragment)

    def errors(self) -> list[str]:
        return [m for m in self.messages if not any(a in m for a in self.allowed)]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Any, console: Console) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    new_page = context.new_page()
    new_page.on("console", lambda m: console.messages.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)
    new_page.on("pageerror", lambda e: console.messages.append(f"uncaught: {e}"))
    new_page.set_default_timeout(30_000)
    yield new_page
    context.close()
    assert not console.errors(), "errors in the browser console:\n" + "\n".join(console.errors())


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    target = Path(os.environ.get("PARETOML_E2E_SHOTS", "/tmp/dashboard-shots"))
    target.mkdir(parents=True, exist_ok=True)
    for shot in folder.glob("*.png"):
        shutil.copy2(shot, target / shot.name)


def ready(page: Any, what: str = "body[data-ready='1']") -> None:
    page.wait_for_selector(what, state="attached")
