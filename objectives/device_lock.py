"""A timing alone on its GPU: a host-wide reader/writer lock per physical device.

Several workers share one GPU (fractional Ray GPUs). Their evaluations may overlap: the GPU
interleaves their kernels and only throughput suffers. A latency measurement may not overlap
anything: a forward pass timed while another process's kernels run measures both. So a
worker's GPU work (compressing, scoring) holds the device's lock *shared*, and a latency or
kernel-table measurement holds it *exclusive*: it starts once the other workers' current
GPU steps are done, and theirs wait until it ends.

Two ``fcntl`` lock files per device, named by the GPU's UUID (under Ray each worker sees its
own ``CUDA_VISIBLE_DEVICES``, where index 0 can be different GPUs), in one folder for the
whole host (``$TMPDIR/paretoml-locks``, whatever a process's cache directory):

* ``<key>.lock``: shared for GPU work, exclusive for a timing;
* ``<key>.gate``: a timing takes it first, and new GPU work passes it on the way in, so a
  timing waits only for the steps already running, never for a stream of new ones.

Long GPU work (scoring a split batch by batch) lets a queued timing in between its steps
(:func:`let_timings_in`): a timing then waits for one batch, not for the whole split. A
worker lets go of its hold (at a step's end or such a pause) only once the kernels it queued
have finished: CUDA launches return before their kernels run.

A process that holds the lock shared and starts a timing first lets its shared hold go (it
would otherwise wait for itself), then takes both locks; after the timing it holds the lock
shared again. The kernel releases a dead process's locks, so a killed worker never leaves the
GPU locked. CPU devices take no lock: each CPU worker times on its own threads.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import torch

#: turn the lock off (e.g. a study that owns its GPU alone): ``PARETOML_EXCLUSIVE_TIMING=0``
ENV_SWITCH = "PARETOML_EXCLUSIVE_TIMING"


def device_key(device: torch.device) -> str | None:
    """A name for the physical device that every process on the host agrees on; None for
    devices that are not shared this way (CPU)."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return f"gpu-{uuid}" if uuid is not None else f"gpu-index-{index}"


def lock_dir() -> Path:
    """One folder for the host, so that processes with different cache directories (tests,
    per-study caches, Ray nodes started with another environment) still exclude each other."""
    folder = Path(tempfile.gettempdir()) / "paretoml-locks"
    folder.mkdir(parents=True, exist_ok=True)
    try:  # any user's workers may share the GPU
        os.chmod(folder, 0o1777)
    except OSError:
        pass
    return folder


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


class _DeviceLock:
    """This process's hold on one device's two lock files (one open file each, so that a
    shared hold and a timing of the same process convert one lock instead of colliding)."""

    def __init__(self, key: str) -> None:
        folder = lock_dir()
        self._lock: IO[str] = open(folder / f"{key}.lock", "a+")  # noqa: SIM115 (held for the process)
        self._gate: IO[str] = open(folder / f"{key}.gate", "a+")  # noqa: SIM115
        self._mutex = threading.Lock()  # the counters and the conversions below
        self._timing = threading.Lock()  # one timing at a time in this process
        self._shared = 0  # GPU steps of this process holding the lock shared
        self._exclusive = False  # a thread of this process holds the device for a timing

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._mutex:
            self._shared += 1
            if self._shared == 1:
                fcntl.flock(self._gate, fcntl.LOCK_SH)  # waits while a timing is queued or running
                fcntl.flock(self._lock, fcntl.LOCK_SH)
                fcntl.flock(self._gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            with self._mutex:
                self._shared -= 1
                if self._shared == 0:
                    fcntl.flock(self._lock, fcntl.LOCK_UN)

    def let_timings_in(self, drain: Callable[[], None]) -> None:
        """Between two steps of shared GPU work: if a timing is queued (the gate is taken),
        wait for this process's queued work to finish (``drain``), give the shared hold up
        until the timing ends, then take it again; otherwise nothing."""
        with self._mutex:
            if self._shared == 0 or self._exclusive:  # this process's own timing: locks converted
                return
            try:
                fcntl.flock(self._gate, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # a timing waits for the shared holders
                drain()  # kernels still queued would run beside the timing
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                fcntl.flock(self._gate, fcntl.LOCK_SH)  # until the timing is done
                fcntl.flock(self._lock, fcntl.LOCK_SH)
            fcntl.flock(self._gate, fcntl.LOCK_UN)

    @contextmanager
    def exclusive(self) -> Iterator[float]:
        start = time.perf_counter()
        with self._timing:
            with self._mutex:
                fcntl.flock(self._lock, fcntl.LOCK_UN)  # this process's own shared hold, if any
                fcntl.flock(self._gate, fcntl.LOCK_EX)  # no new GPU step starts from now on
                fcntl.flock(self._lock, fcntl.LOCK_EX)  # the steps already running have ended
                self._exclusive = True
            try:
                yield time.perf_counter() - start
            finally:
                with self._mutex:
                    self._exclusive = False
                    fcntl.flock(self._lock, fcntl.LOCK_SH if self._shared else fcntl.LOCK_UN)
                    fcntl.flock(self._gate, fcntl.LOCK_UN)


    def close(self) -> None:
        """Release both files (and with them any lock this process still holds)."""
        self._lock.close()
        self._gate.close()


_LOCKS: dict[str, _DeviceLock] = {}
_GUARD = threading.Lock()


@atexit.register
def _close_all() -> None:
    """The files are held for the process's life; closed at its exit, not left to the
    garbage collector (which reported each one as an unclosed file)."""
    with _GUARD:
        for hold in _LOCKS.values():
            hold.close()
        _LOCKS.clear()


def _device_lock(key: str) -> _DeviceLock:
    with _GUARD:
        if key not in _LOCKS:
            _LOCKS[key] = _DeviceLock(key)
        return _LOCKS[key]


@contextmanager
def exclusive(key: str | None) -> Iterator[float]:
    """Hold the device named ``key`` alone (nothing for None); yields the seconds waited."""
    if key is None or not enabled():
        yield 0.0
        return
    with _device_lock(key).exclusive() as waited:
        yield waited


@contextmanager
def shared(key: str | None) -> Iterator[None]:
    """Hold the device named ``key`` with the other workers (a step of GPU work)."""
    if key is None or not enabled():
        yield
        return
    with _device_lock(key).shared():
        yield


def pause(key: str | None, drain: Callable[[], None] = lambda: None) -> None:
    """Between two steps of this process's shared work on the device named ``key``: a queued
    timing runs now, before the next step, once ``drain`` has returned (nothing when none is
    queued, or for None)."""
    if key is None or not enabled():
        return
    _device_lock(key).let_timings_in(drain)


def let_timings_in(device: torch.device) -> None:
    """A point between two steps of this process's GPU work where a queued timing may run
    (after the kernels this process queued have finished: CUDA launches are asynchronous)."""
    pause(device_key(device), lambda: torch.cuda.synchronize(device))


@contextmanager
def exclusive_timing(device: torch.device) -> Iterator[float]:
    """The device to this timing alone (see the module's docstring)."""
    with exclusive(device_key(device)) as waited:
        yield waited


@contextmanager
def gpu_work(device: torch.device) -> Iterator[None]:
    """A step of GPU work that may run beside other workers' but never beside a timing. Its
    kernels have finished when it ends (CUDA launches are asynchronous: a hold let go while
    they are queued would let a timing start beside them)."""
    key = device_key(device)
    with shared(key):
        yield
        if key is not None and enabled():
            torch.cuda.synchronize(device)
