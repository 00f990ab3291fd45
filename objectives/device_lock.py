"""One timing at a time on a GPU: an inter-process lock per physical device.

Several workers share one GPU (fractional Ray GPUs). Their evaluations may overlap, since
the GPU interleaves their kernels and only throughput suffers; their latency measurements
may not, since a forward pass timed while another process's kernels run measures both. So
every latency (and kernel-table) measurement on a CUDA device holds this lock.

The lock is an ``fcntl`` file lock named by the GPU's UUID, not its index: under Ray each
worker sees its own ``CUDA_VISIBLE_DEVICES``, where index 0 can be different GPUs. A file
lock is released by the kernel when its process dies, so a killed worker never leaves the
GPU locked. It serialises processes of one host, which is where a GPU's sharers are.
CPU devices take no lock: each CPU worker times on its own threads.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from paretoml.objectives.tasks.cache import cache_dir

#: turn the lock off (e.g. a study that owns its GPU alone): ``PARETOML_EXCLUSIVE_TIMING=0``
ENV_SWITCH = "PARETOML_EXCLUSIVE_TIMING"

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def device_key(device: torch.device) -> str | None:
    """A name for the physical device that every process on the host agrees on; None for
    devices that are not shared this way (CPU)."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return f"gpu-{uuid}" if uuid is not None else f"gpu-index-{index}"


def lock_path(key: str) -> Path:
    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.lock"


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def exclusive(key: str | None) -> Iterator[float]:
    """Hold the host-wide lock named ``key`` (nothing for None); yields the seconds waited.

    Threads of one process serialise on an in-process lock first (``flock`` locks belong
    to the open file, so two threads of one process would not exclude each other)."""
    if key is None or not enabled():
        yield 0.0
        return
    with _GUARD:
        local = _THREAD_LOCKS.setdefault(key, threading.Lock())
    start = time.perf_counter()
    with local, open(lock_path(key), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - start
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def exclusive_timing(device: torch.device) -> Iterator[float]:
    """The timing lock of ``device`` (see the module's docstring)."""
    with exclusive(device_key(device)) as waited:
        yield waited
