"""Run trials one at a time in this process: for tests, tiny tasks and debugging.

The process works within its thread budget while the executor runs (``threads``, else the
spec's ``threads.driver``, else objectives/threads.py's default) and gets its own threads
back when it closes: a notebook that called ``paretoml.search`` is left as it was."""

from __future__ import annotations

from collections import deque

from paretoml.objectives.tasks.base import Task
from paretoml.objectives.threads import DEFAULT_THREADS, ThreadState, apply_thread_budget, resolve_threads, restore_threads
from paretoml.service.executors.base import (
    Executor,
    ModelDescription,
    TrialJob,
    TrialOutcome,
    describe,
    local_worker_info,
    run_job,
)
from paretoml.service.spec import StudySpec


class InProcessExecutor(Executor):
    """Trials in this process.

    Args:
        spec: the study.
        task: a task given in this process (Python API); default: the spec's, by name.
        threads: this process's thread budget while the executor runs (default: the spec's
            ``threads.driver``, else ``DEFAULT_THREADS``).
    """

    def __init__(self, spec: StudySpec, task: Task | None = None, threads: int | None = None) -> None:
        self.spec = spec
        self.task = task
        self.threads = resolve_threads(threads, spec.threads.driver, default=DEFAULT_THREADS)
        self._threads_before: ThreadState | None = None
        self._queue: deque[TrialJob] = deque()
        self._evaluator = None
        self._info = local_worker_info("inprocess")

    @property
    def slots(self) -> int:
        return 1

    def start(self) -> ModelDescription:
        from paretoml.service.runner import build_evaluator

        if self._threads_before is None:
            self._threads_before = apply_thread_budget(self.threads)
        if self._evaluator is None:
            self._evaluator = build_evaluator(self.spec, self.task)
        return describe(self._evaluator, self.spec)

    def submit(self, job: TrialJob) -> None:
        self._queue.append(job)

    def wait(self, timeout: float) -> list[TrialOutcome]:
        if not self._queue:
            return []
        assert self._evaluator is not None, "start() first"
        job = self._queue.popleft()
        decider = self.rung_decider
        gate = None
        if decider is not None and job.has_rungs:
            def gate(step: int, values: dict[str, float]) -> bool:
                return decider(job.trial_id, step, values)
        return [run_job(self._evaluator, job, self._info, gate)]

    def close(self) -> None:
        self._queue.clear()
        if self._threads_before is not None:
            restore_threads(self._threads_before)
            self._threads_before = None
