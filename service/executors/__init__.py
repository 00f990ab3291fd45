"""Executors run trials: in this process, or on a pool of long-lived Ray actors."""

from paretoml.service.executors.base import Executor, TrialJob, TrialOutcome, WorkerInfo

__all__ = ["Executor", "TrialJob", "TrialOutcome", "WorkerInfo", "create_executor"]


def create_executor(kind: str, spec, workers: int = 1, **options) -> Executor:  # type: ignore[no-untyped-def]
    """``inprocess`` or ``ray``; Ray is imported only when asked for."""
    if kind == "inprocess":
        from paretoml.service.executors.inprocess import InProcessExecutor

        if workers != 1:
            raise ValueError("the in-process executor runs one trial at a time (--workers 1)")
        return InProcessExecutor(spec, threads=options.get("threads"))
    if kind == "ray":
        from paretoml.service.executors.ray_pool import RayPoolExecutor

        return RayPoolExecutor(spec, workers=workers, **options)
    raise ValueError(f"unknown executor {kind!r}; available: inprocess, ray")
