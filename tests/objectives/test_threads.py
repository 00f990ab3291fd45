"""The thread budget: refused when it is no budget, applied to torch, BLAS and children, given back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from threadpoolctl import threadpool_info

from paretoml.objectives.threads import (
    DEFAULT_THREADS,
    THREAD_ENV_VARS,
    ThreadBudgetError,
    apply_thread_budget,
    check_threads,
    resolve_threads,
    restore_threads,
    thread_budget,
    worker_threads,
)


@pytest.mark.parametrize(("num_cpus", "threads"), [(1, 1), (2, 2), (2.0, 2), (0.5, 1), (0.25, 1), (3.7, 3), (16, 16)])
def test_a_worker_gets_the_threads_of_its_cpu_share(num_cpus, threads):
    assert worker_threads(num_cpus) == threads


@pytest.mark.parametrize("num_cpus", [0, -1, float("nan"), float("inf"), "2", True, None])
def test_a_cpu_share_that_is_no_share_is_refused(num_cpus):
    with pytest.raises(ThreadBudgetError, match="num_cpus"):
        worker_threads(num_cpus)


@pytest.mark.parametrize("threads", [0, -2, 257, 1.5, "4", True, None])
def test_a_budget_that_is_no_budget_is_refused(threads):
    with pytest.raises(ThreadBudgetError, match="threads"):
        check_threads(threads)


def test_the_first_budget_given_wins_else_the_default():
    assert resolve_threads(None, None, default=DEFAULT_THREADS) == DEFAULT_THREADS == 1
    assert resolve_threads(None, 3, default=1) == 3
    assert resolve_threads(2, 3, default=1) == 2
    with pytest.raises(ThreadBudgetError):
        resolve_threads(0, 3, default=1)


def test_applied_budget_holds_for_torch_blas_and_children_and_is_given_back(monkeypatch):
    for name in THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(2)
    state = apply_thread_budget(1)
    try:
        assert torch.get_num_threads() == 1 and thread_budget() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"],
                               capture_output=True, text=True, check=True)
        assert child.stdout.strip() == "1"
    finally:
        restore_threads(state)
    assert torch.get_num_threads() == 2
    assert not any(name in os.environ for name in THREAD_ENV_VARS)


def test_a_fresh_process_gets_one_inter_op_thread():
    """(Inter-op threads can be set only before a process's first parallel work, so in a
    fresh process.)"""
    code = ("import torch; from paretoml.objectives.threads import apply_thread_budget; apply_thread_budget(1); "
            "print(torch.get_num_threads(), torch.get_num_interop_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
