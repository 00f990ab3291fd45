"""The dashboard's Ray banner, in Chromium, against a real server whose first Ray starts
fail (a fault injected after Ray has spawned its processes, tests/service/ray_faults.py):
the banner says Ray is down and why while a submitted study waits in the queue, and goes
by itself once Ray is up; the study then runs to completion."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tests.e2e.conftest import SEED_STUDY, ready, start_server, stop_server

LAUNCHER = Path(__file__).parents[1] / "service" / "ray_faults.py"


def test_the_banner_shows_while_ray_is_down_and_goes_once_it_is_up(tmp_path: Path, page: Any, shots: Path) -> None:
    server = start_server(tmp_path / "late-ray", command=[sys.executable, str(LAUNCHER), "serve"],
                          extra_env={"PARETOML_TEST_RAY_FAILURES": "2", "PARETOML_TEST_RAY_FAULT": "connect",
                                     "PARETOML_RAY_RETRY_BASE_S": "4", "PARETOML_RAY_RETRY_MAX_S": "4"})
    try:
        page.goto(server.url + "/")
        ready(page)
        page.wait_for_function("() => (document.getElementById('ray-banner').dataset.ray || '').startsWith('down: ')",
                               timeout=90_000)
        banner = page.locator("#ray-banner")
        assert banner.is_visible()
        assert "Ray is down" in banner.inner_text() and "injected fault" in banner.inner_text()
        created = server.request("POST", "/api/v1/studies", {**SEED_STUDY, "name": "late-ray", "n_trials": 4})
        assert server.get(f"/api/v1/studies/{created['id']}")["status"] == "queued"
        page.wait_for_selector(f"tr[data-study='{created['id']}']")  # the list shows it, queued
        page.screenshot(path=shots / "10-ray-down-banner.png", full_page=True)

        page.wait_for_selector("#ray-banner", state="hidden", timeout=120_000)  # the page polls /health
        assert server.get("/api/v1/health")["ray"] == "ok"
        assert server.wait_for(created["id"], {"completed", "failed"})["status"] == "completed"
    finally:
        page.goto("about:blank")  # no poll of a stopped server
        stop_server(server)
