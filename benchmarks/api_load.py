"""20 clients against a real ``paretoml serve`` on loopback for 30 s.

Each client loops: submit a small study (every 10th request), read a study, list
studies. The server runs the submitted studies meanwhile (one at a time, on Ray), so
reads compete with real trials for the same cores. Printed: requests per status, the
latency percentiles of ``GET /studies/{id}``, and whether every accepted job is stored.

    python benchmarks/api_load.py [--clients 20] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa

from _machine import machine

SPEC = {"task": "synthetic", "knobs": [{"kind": "bitwidth", "choices": [2, 4, 8]}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
        "measure": {"latency_repeats": 2, "latency_warmup": 0}, "n_trials": 5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def client_loop(base: str, until: float, seed: int, ids: list[str], statuses: Counter[int],
                      get_latency: list[float], errors: list[str]) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        n = 0
        while time.monotonic() < until:
            n += 1
            try:
                if n % 10 == 1 or not ids:
                    response = await http.post("/api/v1/studies", json=SPEC)
                    if response.status_code == 202:
                        ids.append(response.json()["id"])
                elif n % 3 == 0:
                    response = await http.get("/api/v1/studies", params={"limit": 20})
                else:
                    start = time.perf_counter()
                    response = await http.get(f"/api/v1/studies/{rng.choice(ids)}")
                    get_latency.append(time.perf_counter() - start)
                statuses[response.status_code] += 1
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")


async def drive(base: str, clients: int, seconds: float) -> tuple[list[str], Counter[int], list[float], list[str]]:
    ids: list[str] = []
    statuses: Counter[int] = Counter()
    latency: list[float] = []
    errors: list[str] = []
    until = time.monotonic() + seconds
    await asyncio.gather(*(client_loop(base, until, i, ids, statuses, latency, errors) for i in range(clients)))
    return ids, statuses, latency, errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="paretoml-load-"))
    url = f"sqlite:///{work / 'load.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ}
    env.pop("PARETOML_API_TOKEN", None)
    server = subprocess.Popen([sys.executable, "-m", "paretoml.service.cli", "serve", "--storage", url,
                               "--port", str(port)], cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=(work / "server.log").open("w"), text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        ids, statuses, latency, errors = asyncio.run(drive(base, args.clients, args.seconds))
    finally:
        stop = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
            shutdown = f"graceful shutdown took {time.monotonic() - stop:.1f} s"
        except subprocess.TimeoutExpired:
            server.kill()
            shutdown = "graceful shutdown did not end within 120 s: killed"
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        stored = {row[0] for row in conn.execute(sa.text("SELECT id FROM paretoml_jobs"))}
        states = dict(conn.execute(sa.text("SELECT status, count(*) FROM paretoml_jobs GROUP BY status")).all())
    lost = set(ids) - stored
    total = sum(statuses.values())
    ms = np.asarray(latency) * 1000
    print(f"machine: {machine()}")
    print(f"{args.clients} clients, {args.seconds:.0f} s, loopback, server: paretoml serve (uvicorn, SQLite, "
          f"1 study runner on Ray)")
    print(f"requests: {total} ({total / args.seconds:.0f}/s); statuses: {dict(sorted(statuses.items()))}; "
          f"transport errors: {len(errors)}")
    print(f"5xx: {sum(v for k, v in statuses.items() if k >= 500)}")
    print(f"GET /studies/{{id}}: n={len(ms)} p50={np.percentile(ms, 50):.1f} ms p90={np.percentile(ms, 90):.1f} ms "
          f"p99={np.percentile(ms, 99):.1f} ms max={ms.max():.1f} ms")
    print(f"server log: {work / 'server.log'}; {shutdown}")
    print(f"jobs accepted: {len(ids)}; stored: {len(stored)}; lost: {len(lost)}; by status after shutdown: {states}")


if __name__ == "__main__":
    main()
