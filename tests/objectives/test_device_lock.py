"""The GPU timing lock: a timing alone on its device, GPU work side by side, across processes.

The lock is keyed by a name (a GPU's UUID on a real machine); these tests use a made-up
key, since the logic is the same for any device and no GPU is needed to check it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from paretoml.objectives.device_lock import device_key, exclusive, pause, shared

KEY = "gpu-test-fake-uuid"


def _timed_sections(out: str, key: str, cache: str, n: int, hold_s: float, kind: str = "exclusive",
                    gap_s: float = 0.0, ready: Any = None) -> None:
    os.environ["PARETOML_CACHE_DIR"] = cache
    hold = exclusive if kind == "exclusive" else shared
    if ready is not None:  # spawned processes import torch for seconds: start the sections together
        ready.wait(60)
    with open(out, "a") as handle:
        for _ in range(n):
            with hold(key):
                start = time.monotonic()
                time.sleep(hold_s)
                handle.write(f"{kind} {start} {time.monotonic()}\n")
                handle.flush()
            time.sleep(gap_s)


def _intervals(path: Path, kind: str | None = None) -> list[tuple[float, float]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return sorted((float(a), float(b)) for k, a, b in rows if kind is None or k == kind)


def _overlaps(intervals: list[tuple[float, float]]) -> int:
    return sum(1 for (_, end), (start, _) in zip(intervals, intervals[1:]) if start < end)


def _run_processes(tmp_path: Path, n_procs: int = 3) -> list[tuple[float, float]]:
    out = tmp_path / "sections.txt"
    ctx = mp.get_context("spawn")
    ready = ctx.Barrier(n_procs)
    procs = [ctx.Process(target=_timed_sections,
                         args=(str(out), KEY, os.environ["PARETOML_CACHE_DIR"], 6, 0.03, "exclusive", 0.0, ready))
             for _ in range(n_procs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return _intervals(out)


def test_processes_sharing_a_device_never_time_at_once(tmp_path):
    intervals = _run_processes(tmp_path)
    assert len(intervals) == 18
    assert _overlaps(intervals) == 0


def test_without_the_lock_the_same_processes_do_overlap(tmp_path, monkeypatch):
    """The check above can fail: switched off, the sections run concurrently."""
    monkeypatch.setenv("PARETOML_EXCLUSIVE_TIMING", "0")
    assert _overlaps(_run_processes(tmp_path)) > 0


def test_gpu_work_runs_side_by_side_but_never_beside_a_timing(tmp_path):
    """Two workers' GPU steps (shared) overlap each other; a third worker's timings
    (exclusive) overlap none of them, and get their turn although the steps come back to back."""
    out = tmp_path / "sections.txt"
    ctx = mp.get_context("spawn")
    cache = os.environ["PARETOML_CACHE_DIR"]
    ready = ctx.Barrier(3)
    work = [ctx.Process(target=_timed_sections, args=(str(out), KEY, cache, 40, 0.03, "shared", 0.0, ready))
            for _ in range(2)]
    timing = ctx.Process(target=_timed_sections, args=(str(out), KEY, cache, 5, 0.02, "exclusive", 0.02, ready))
    for p in [*work, timing]:
        p.start()
    for p in [*work, timing]:
        p.join(120)
        assert p.exitcode == 0
    steps, timings = _intervals(out, "shared"), _intervals(out, "exclusive")
    assert len(steps) == 80 and len(timings) == 5
    assert _overlaps(steps) > 0  # GPU work is shared
    for start, end in timings:
        assert not any(s < end and start < e for s, e in steps)
    # the timings did not wait for the 2.4 s of back-to-back steps to run out
    assert timings[-1][1] < steps[-1][1]


def test_a_timing_inside_the_same_process_s_gpu_work_does_not_wait_for_itself():
    done = threading.Event()

    def nested() -> None:
        with shared(KEY + "-nested"):
            with exclusive(KEY + "-nested"):
                pass
            with shared(KEY + "-nested"):
                pass
        done.set()

    threading.Thread(target=nested, daemon=True).start()
    assert done.wait(10)


def test_threads_of_one_process_exclude_each_other_too():
    active = 0
    most = 0
    guard = threading.Lock()

    def section() -> None:
        nonlocal active, most
        for _ in range(5):
            with exclusive(KEY):
                with guard:
                    active += 1
                    most = max(most, active)
                time.sleep(0.005)
                with guard:
                    active -= 1

    threads = [threading.Thread(target=section) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1


def _started_once_ready(target: Any, args: tuple[Any, ...], ready: Path) -> mp.process.BaseProcess:
    """A spawned process running ``target``, returned once it has touched ``ready``."""
    proc = mp.get_context("spawn").Process(target=target, args=args)
    proc.start()
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc


def _hold_forever(key: str, cache: str, ready: str) -> None:
    os.environ["PARETOML_CACHE_DIR"] = cache
    with exclusive(key):
        Path(ready).touch()
        time.sleep(600)


def test_a_worker_killed_while_timing_does_not_leave_the_gpu_locked(tmp_path):
    ready = tmp_path / "ready"
    key = KEY + "-killed"  # this test's waiter keeps the lock it finally gets
    proc = _started_once_ready(_hold_forever, (key, os.environ["PARETOML_CACHE_DIR"], str(ready)), ready)
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (exclusive(key).__enter__(), got.set()), daemon=True)
    waiter.start()
    assert not got.wait(0.3)  # held by the other process
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert got.wait(5)  # the kernel released the dead process's lock


def test_cpu_devices_take_no_lock():
    assert device_key(torch.device("cpu")) is None
    with exclusive(None) as waited:
        assert waited == 0.0


def _long_shared_work(key: str, cache: str, ready: str, steps: int, step_s: float, pausing: bool) -> None:
    """GPU work of many steps (batches) under one shared hold, pausing between steps or not."""
    os.environ["PARETOML_CACHE_DIR"] = cache
    drained = Path(ready).with_name("drained")
    with shared(key):
        Path(ready).touch()
        for _ in range(steps):
            time.sleep(step_s)
            if pausing:  # a GPU worker drains its queued kernels before it lets a timing in
                pause(key, drain=lambda: drained.open("a").write("drained\n"))


@pytest.mark.parametrize("pausing", [True, False])
def test_a_timing_waits_for_one_step_of_long_gpu_work_that_pauses(tmp_path, pausing):
    """Scoring holds the GPU shared for a whole split but pauses between batches: a timing
    queued meanwhile runs after the batch in flight, not after the split. Without the pauses
    (the control) it waits for the whole 2 s of work, so the check can fail."""
    key = f"{KEY}-pause-{pausing}"
    ready = tmp_path / "ready"
    proc = _started_once_ready(
        _long_shared_work, (key, os.environ["PARETOML_CACHE_DIR"], str(ready), 40, 0.05, pausing), ready)
    start = time.monotonic()
    with exclusive(key):
        waited = time.monotonic() - start
        still_working = proc.is_alive()
    proc.join(30)
    assert proc.exitcode == 0
    if pausing:
        assert waited < 0.5 and still_working  # one 0.05 s step, then the timing; the work goes on after
        assert (tmp_path / "drained").read_text() == "drained\n"  # once: only a queued timing drains
    else:
        assert waited > 1.5
