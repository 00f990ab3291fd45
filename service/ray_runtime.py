"""Starting (or joining) Ray so that a failed start leaves nothing running.

``ray.init`` can fail after it has spawned a whole local cluster (GCS, raylet, agents):
its working directory gone, a port taken, a full /tmp, a GCS slow to answer. Ray keeps no
handle on a half-started node that ``ray.shutdown`` could always reach, so every retry
would add one more cluster. :func:`start_ray` shuts Ray down after a failure and ends the
processes that the attempt spawned (new descendants of this process, and the orphans of
the attempt: agents a raylet started late, re-parented to init when it was ended), then
raises :class:`RayStartError` with a one-line reason. :func:`retry_delay` is the back-off.

:func:`stop_ray` is the other end: ``ray.shutdown`` ends the local runtime's GCS and raylet,
but the raylet's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``, ~95 MB each),
re-parented to init, notice only by polling and then try to report to the GCS that is gone:
they lingered 1-5 minutes after the server had exited. So the processes a local start
spawned are noted (at the start, and again at the stop), and whatever is left of them after
the shutdown is ended, with the start's orphans (its processes whose raylet died first, e.g.
when the thread that started Ray ended: Ray's parent-death signal).

None of that runs if the process is ended at once, and Ray's driver used to do just that:
its core worker installs a C++ failure-signal handler for SIGTERM too (a stack trace, then
the default action), over the handler the process had. A server sent SIGTERM while, or just
after, Ray started died on the spot and left the agents running. :func:`start_ray` keeps the
process's own SIGTERM handling (:func:`_keep_signal_handlers`).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

log = logging.getLogger("paretoml.ray")

#: one start at a time per process: the scheduler's thread and a pool may both ask
_start_lock = threading.Lock()
#: the local runtime started by this process: its start, and the processes it had spawned
_local: tuple[_Attempt, list[psutil.Process]] | None = None


class RayStartError(RuntimeError):
    """``ray.init`` failed; whatever the attempt had started has been ended."""

    def __init__(self, reason: str, cleaned: int) -> None:
        super().__init__(reason)
        self.reason = reason
        #: processes of the failed attempt that were still running after ``ray.shutdown``
        self.cleaned = cleaned


@dataclass(frozen=True)
class RayOptions:
    """How to reach Ray: a cluster ``address``, or a local runtime under ``temp_dir``."""

    address: str | None = None
    temp_dir: str | None = None
    #: GPUs a local runtime offers (default: those Ray detects); a cluster declares its own
    num_gpus: int | None = None

    def init_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if self.address:
            kwargs["address"] = self.address
            return kwargs
        if self.temp_dir:  # only for a local runtime: "auto" looks for its cluster in Ray's default dir
            kwargs["_temp_dir"] = os.path.abspath(self.temp_dir)
        if self.num_gpus is not None:
            kwargs["num_gpus"] = self.num_gpus
        return kwargs


def retry_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): doubling, capped."""
    return float(min(max_s, base_s * 2.0 ** min(attempt - 1, 60)))


def start_ray(options: RayOptions) -> bool:
    """Start or join Ray unless it is up already; True if this call did.

    Call it from a thread that lives as long as Ray should: Ray's processes die with the
    thread that started them (parent-death signal). On failure, Ray is shut down, the
    processes the attempt spawned are ended, and :class:`RayStartError` is raised.
    """
    import ray

    with _start_lock:
        if ray.is_initialized():
            return False
        _ensure_working_directory()
        _keep_signal_handlers()
        before = _descendant_keys()
        attempt = _Attempt(since=time.time() - 1.0, cwd=os.getcwd())
        try:
            ray.init(**options.init_kwargs())
            if not options.address:  # a local runtime: its processes are this process's to end
                global _local
                _local = (attempt, [p for p in _descendants() if _key(p) not in before and _is_ray_process(p)])
        except BaseException as exc:
            spawned = [p for p in _descendants() if _key(p) not in before and _is_ray_process(p)]
            _shutdown_quietly()
            cleaned = end_processes(spawned)
            # a raylet can start its agents after the snapshot above; ended with it, they are
            # re-parented away from this process, so they are looked for as the attempt's orphans
            for _ in range(3):
                time.sleep(0.2)
                stragglers = [p for p in _descendants() if _key(p) not in before and _is_ray_process(p)]
                stragglers += attempt.orphans()
                if not stragglers:
                    break
                cleaned += end_processes(stragglers)
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: cleaned up, then as they were
                raise
            log.debug("ray.init failed", exc_info=True)
            raise RayStartError(one_line(exc), cleaned) from exc
        return True


@dataclass(frozen=True)
class _Attempt:
    """When and where a start attempt ran: its orphaned processes started after ``since``
    and inherited this process's working directory."""

    since: float
    cwd: str

    def orphans(self) -> list[psutil.Process]:
        """Ray processes of this attempt whose parent has gone (re-parented to init)."""
        found = []
        for process in psutil.process_iter(["pid", "ppid", "create_time", "cwd"]):
            info = process.info
            if info["pid"] == os.getpid() or (info["create_time"] or 0.0) < self.since or info["cwd"] != self.cwd:
                continue
            try:
                parent_gone = info["ppid"] in (0, 1) or not psutil.pid_exists(info["ppid"])
            except psutil.Error:
                continue
            if parent_gone and _is_ray_process(process) and _running(process):
                found.append(process)
        return found


def one_line(exc: BaseException) -> str:
    text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")[:300]


def end_processes(processes: list[psutil.Process], grace_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after ``grace_s``; the number that were still running."""
    alive = [p for p in processes if _running(p)]
    for process in alive:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, stubborn = psutil.wait_procs(alive, timeout=grace_s)
    for process in stubborn:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(stubborn, timeout=grace_s)
    return len(alive)


def _ensure_working_directory() -> None:
    """Ray's driver puts its working directory on the workers' path and fails without one.
    The server resolved every path it needs at start, so a removed directory is replaced by /."""
    try:
        os.getcwd()
    except FileNotFoundError:
        log.warning("the working directory was removed; Ray starts from / instead")
        os.chdir(os.sep)


def _keep_signal_handlers() -> None:
    """Stop Ray's driver from taking SIGTERM (and the crash signals) from this process.

    Ray reads this flag when the driver's core worker starts, so it changes this process
    only (Ray's workers read their own environment). Python's faulthandler still prints a
    stack on a crash, as Ray's handler did."""
    from ray._private import ray_constants

    if hasattr(ray_constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"):
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    else:  # a Ray without the flag: SIGTERM may end this process at once again
        log.warning("cannot keep Ray from handling SIGTERM: its agents may outlive this process")
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable()
        except (AttributeError, OSError, RuntimeError, ValueError):  # a stderr without a file (captured)
            pass


def note_local_processes() -> None:
    """Note the local runtime's processes as they are now (agents the raylet started after
    ``ray.init`` returned), for :func:`stop_ray`. Call it before the thread that started
    Ray ends: its raylet dies with it, and the raylet's agents are no descendants then."""
    global _local
    with _start_lock:
        if _local is not None:
            _local = (_local[0], _local[1] + [p for p in _descendants() if _is_ray_process(p)])


def stop_ray(grace_s: float = 5.0) -> int:
    """Shut Ray down and end what the local runtime started here leaves running (its
    agents); the number of processes ended. A joined cluster's processes are left alone."""
    global _local
    with _start_lock:
        local, _local = _local, None
        spawned = local[1] + [p for p in _descendants() if _is_ray_process(p)] if local else []
        _shutdown_quietly()
        if local is None:
            return 0
        time.sleep(0.2)  # agents of a raylet that has just gone are re-parented by now
        unique = {_key(p): p for p in spawned + local[0].orphans()}
        return end_processes(list(unique.values()), grace_s)


def _shutdown_quietly() -> None:
    import ray

    try:
        ray.shutdown()
    except Exception:  # a half-initialised worker can fail to disconnect; its processes are ended next
        log.debug("ray.shutdown after a failed start failed", exc_info=True)


def _descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _key(process: psutil.Process) -> tuple[int, float]:
    try:
        return process.pid, process.create_time()
    except psutil.Error:
        return process.pid, 0.0


def _descendant_keys() -> set[tuple[int, float]]:
    return {_key(p) for p in _descendants()}


def _is_ray_process(process: psutil.Process) -> bool:
    """Ray's executables and scripts live in the ray package; its workers and agents are
    named ``ray::...``."""
    try:
        return process.name().startswith("ray") or any("ray" in part for part in process.cmdline())
    except psutil.Error:
        return False


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
