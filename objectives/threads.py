"""How many threads a process computes with: one budget, set once when the process starts.

Left alone, every compute library in a process takes all the machine's cores: PyTorch's
intra-op pool, OpenMP and the BLAS under numpy, XGBoost. On a machine shared with other
work, or with several Ray workers side by side, those pools oversubscribe the cores, and
OpenMP's spinning threads then wait for each other: a 20-trial demo beside one busy
process ran 30x slower than alone. So each process gets a budget of threads:

* a Ray worker: its share of CPUs, ``num_cpus`` rounded down, at least 1
  (:func:`worker_threads`);
* the process that samples, and runs the trials when they run in process (the CLI's, the
  Python API's, the server's): :data:`DEFAULT_THREADS`;
* either one overridable by the spec (``threads.driver``, ``threads.worker``) and the CLI
  (``--threads``).

:func:`apply_thread_budget` sets torch's intra-op threads to the budget and its inter-op
pool to one thread (eager PyTorch runs each op on the calling thread; the inter-op pool
serves only ``torch.jit.fork``), limits the OpenMP/BLAS pools already loaded
(threadpoolctl), and sets ``OMP_NUM_THREADS`` and its kin for child processes.
:func:`thread_budget` is what code that sizes its own pools asks (XGBoost's ``n_jobs``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

#: threads of a process that samples and runs trials in process, unless told otherwise:
#: the small models this runs in process gain little from more, and one thread cannot
#: oversubscribe a core that other work is using
DEFAULT_THREADS = 1
#: the most threads a budget may name (a bound on typos, not on machines)
MAX_THREADS = 256
#: environment variables that size OpenMP and BLAS pools in processes started from here
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

_applied: int | None = None


class ThreadBudgetError(ValueError):
    """A thread budget that no process can work within."""


def check_threads(threads: object) -> int:
    """``threads`` as a budget: an integer from 1 to :data:`MAX_THREADS`, else ThreadBudgetError."""
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise ThreadBudgetError(f"threads must be a whole number, not {threads!r}")
    if not 1 <= threads <= MAX_THREADS:
        raise ThreadBudgetError(f"threads must be between 1 and {MAX_THREADS}, not {threads}")
    return threads


def worker_threads(num_cpus: float) -> int:
    """The budget of a Ray worker that reserves ``num_cpus``: whole CPUs, at least one
    (a worker of 0.5 CPU still needs a thread to run on)."""
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, int | float):
        raise ThreadBudgetError(f"num_cpus must be a number, not {num_cpus!r}")
    if not math.isfinite(num_cpus) or num_cpus <= 0:
        raise ThreadBudgetError(f"num_cpus must be a positive number, not {num_cpus!r}")
    return min(MAX_THREADS, max(1, math.floor(num_cpus + 1e-9)))


def resolve_threads(*choices: int | None, default: int) -> int:
    """The first budget given among ``choices`` (CLI before spec), else ``default``."""
    for choice in choices:
        if choice is not None:
            return check_threads(choice)
    return check_threads(default)


@dataclass(frozen=True)
class ThreadState:
    """What :func:`apply_thread_budget` replaced, so that a library caller's process can be
    given back as it was (:func:`restore_threads`)."""

    torch_threads: int
    env: dict[str, str | None]
    applied: int | None
    #: threadpoolctl's limiter, which knows the OpenMP/BLAS pools' sizes before
    pools: Any


def apply_thread_budget(threads: int) -> ThreadState:
    """Make ``threads`` this process's budget: torch (intra-op; inter-op 1 if it is not
    fixed yet), the OpenMP/BLAS pools already loaded, and the environment of children."""
    global _applied
    import torch
    from threadpoolctl import threadpool_limits

    threads = check_threads(threads)
    torch_threads, env = torch.get_num_threads(), {k: os.environ.get(k) for k in THREAD_ENV_VARS}
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # fixed once inter-op work has run; it stays what it was
            pass
    pools = threadpool_limits(limits=threads)
    state = ThreadState(torch_threads, env, _applied, pools)
    _applied = threads
    return state


def restore_threads(state: ThreadState) -> None:
    """Give the process back the threads it had before :func:`apply_thread_budget`."""
    global _applied
    import torch

    for name, value in state.env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    state.pools.restore_original_limits()
    torch.set_num_threads(state.torch_threads)
    _applied = state.applied


def thread_budget() -> int:
    """This process's budget: the one applied, else :data:`DEFAULT_THREADS`."""
    return _applied if _applied is not None else DEFAULT_THREADS
