"""Run trials one at a time in this process: for tests, tiny tasks and debugging."""

from __future__ import annotations

from collections import deque

from paretoml.objectives.tasks.base import Task
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
    def __init__(self, spec: StudySpec, task: Task | None = None) -> None:
        self.spec = spec
        self.task = task
        self._queue: deque[TrialJob] = deque()
        self._evaluator = None
        self._info = local_worker_info("inprocess")

    @property
    def slots(self) -> int:
        return 1

    def start(self) -> ModelDescription:
        from paretoml.service.runner import build_evaluator

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
