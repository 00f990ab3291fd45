"""Starting Ray so that a failed start leaves nothing running: a real ``ray.init`` in this
process, made to fail after it has spawned its cluster; only this process's children count."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import psutil
import pytest
import ray
from ray._private import worker
from ray._private.node import Node

from paretoml.service.ray_runtime import RayOptions, RayStartError, retry_delay, start_ray


def test_retry_delay_doubles_from_the_base_up_to_the_cap():
    assert [retry_delay(n, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_delay(10_000, 0.5, 30.0) == 30.0  # no overflow however long Ray stays down


def test_the_temp_dir_is_absolute_and_only_for_a_local_runtime(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert RayOptions(temp_dir="rt").init_kwargs()["_temp_dir"] == str(tmp_path / "rt")
    joined = RayOptions(address="auto", temp_dir="rt").init_kwargs()
    assert joined["address"] == "auto" and "_temp_dir" not in joined  # "auto" looks in Ray's own dir


def _ray_children() -> set[int]:
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and ("ray" in child.name() or "ray" in " ".join(child.cmdline())):
                found.add(child.pid)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("fault", ["connect", "node"])
def test_a_start_that_fails_after_spawning_ends_every_process_it_started(fault, monkeypatch):
    if ray.is_initialized():
        pytest.skip("Ray already runs in this test process")
    before = _ray_children()
    at_fault: list[set[int]] = []

    def fail(*args: Any, **kwargs: Any) -> None:
        at_fault.append(_ray_children() - before)
        raise FileNotFoundError(2, "injected fault")

    if fault == "connect":  # where a removed working directory fails; ray.init holds the node
        monkeypatch.setattr(worker, "connect", fail)
    else:  # the node's processes are up, but ray.init never held the node
        real = Node.start_ray_processes
        monkeypatch.setattr(Node, "start_ray_processes", lambda self: (real(self), fail()))
    temp_dir = tempfile.mkdtemp(prefix="prt-")  # short: Ray's socket paths must stay < 108 bytes
    try:
        with pytest.raises(RayStartError, match="FileNotFoundError: .*injected fault") as failed:
            start_ray(RayOptions(temp_dir=temp_dir))
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert len(at_fault[0]) >= 3  # GCS, raylet, and more were running when it failed
    assert not ray.is_initialized()
    assert not (_ray_children() - before)  # every one has been ended
    if fault == "node":
        assert failed.value.cleaned >= 3  # ray.shutdown() could not reach these: our clean-up did


KEEPS_SIGTERM = """
import os, signal, sys, threading, time
from paretoml.service.ray_runtime import RayOptions, start_ray, stop_ray

received = []
signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
started = threading.Thread(target=start_ray, args=(RayOptions(temp_dir=sys.argv[1]),))  # as the server does
started.start()
started.join()
os.kill(os.getpid(), signal.SIGTERM)
deadline = time.monotonic() + 10
while not received and time.monotonic() < deadline:
    time.sleep(0.05)
print("handled" if received else "not handled", flush=True)
stop_ray()
"""


def test_a_process_that_started_ray_keeps_its_own_sigterm_handler(tmp_path):
    """Ray's driver used to take SIGTERM (a C++ failure handler: a stack trace, then death),
    so a server ended while Ray started died at once and left Ray's agents running."""
    script = tmp_path / "keeps_sigterm.py"
    script.write_text(KEEPS_SIGTERM)
    temp_dir = tempfile.mkdtemp(prefix="pks-")  # short: Ray's socket paths must stay < 108 bytes
    try:
        done = subprocess.run([sys.executable, str(script), temp_dir], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0 and done.stdout.strip() == "handled", (done.returncode, done.stdout, done.stderr[-2000:])
