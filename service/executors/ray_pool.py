"""A pool of long-lived Ray actors, each holding the task's model and data.

Each actor builds its evaluator once, so a trial costs its evaluation plus one remote call.
Actors declare ``num_cpus`` / ``num_gpus``; ``num_gpus="auto"`` shares the cluster's GPUs
evenly among the workers when the study measures on CUDA (:mod:`.gpu_share`), several
workers to a GPU, each holding its own copy of the model. The pool starts a local
Ray runtime by default, or joins a cluster (``address="auto"`` or ``"ray://host:10001"``);
every node must have paretoml installed. A trial whose worker process dies (``os._exit``,
a segfault, the out-of-memory killer) fails alone and its actor is replaced. Each worker
computes within a thread budget, set first thing in the worker: its ``num_cpus`` share
(at least 1), or the spec's ``threads.worker``, or ``threads`` given here.
"""

from __future__ import annotations

import sys
import sysconfig
import threading
import time
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError
from torch import nn

from paretoml.objectives.tasks.base import Task
from paretoml.objectives.threads import apply_thread_budget, resolve_threads, worker_threads
from paretoml.service.executors.base import (
    Executor,
    ModelDescription,
    TrialJob,
    TrialOutcome,
    WorkerInfo,
    describe,
    run_job,
)
from paretoml.service.executors.gpu_share import GpuRequest, gpu_share
from paretoml.service.ray_runtime import RayOptions, start_ray, stop_ray
from paretoml.service.spec import StudySpec


class StartCancelled(RuntimeError):
    """``cancel`` was set before every worker had loaded its model."""


class RungBoard:
    """The actor between workers and the driver at rungs: a worker posts its rung values and
    waits for the decision; the driver (in :meth:`RayPoolExecutor.wait`) takes the posts,
    asks the runner's decider and posts the answers back."""

    def __init__(self) -> None:
        self._posts: list[tuple[int, int, dict[str, float]]] = []
        self._decisions: dict[tuple[int, int], bool] = {}

    def post(self, trial_id: int, step: int, values: dict[str, float]) -> None:
        self._posts.append((trial_id, step, values))

    def take_posts(self) -> list[tuple[int, int, dict[str, float]]]:
        posts, self._posts = self._posts, []
        return posts

    def decide(self, trial_id: int, step: int, stop: bool) -> None:
        self._decisions[(trial_id, step)] = stop

    def decision(self, trial_id: int, step: int) -> bool | None:
        return self._decisions.pop((trial_id, step), None)


class TrialWorker:
    """The actor: one task loaded once, then any number of trials."""

    def __init__(self, spec_json: dict[str, Any], name: str, task: Any = None, gpu_share: float = 0.0,
                 threads: int = 1) -> None:
        from paretoml.service.runner import build_evaluator
        from paretoml.service.spec import parse_spec

        apply_thread_budget(threads)  # before the task loads: its libraries size their pools now

        self.spec = parse_spec(spec_json, {task.name: task} if task is not None else None)
        if 0 < gpu_share < 1:
            _limit_gpu_memory(gpu_share)
        self.evaluator = build_evaluator(self.spec, task)
        context = ray.get_runtime_context()
        import os

        self.info = WorkerInfo(worker=name, node=context.get_node_id(), pid=os.getpid(),
                               gpus=tuple(str(g) for g in ray.get_gpu_ids()))

    def placement(self) -> WorkerInfo:
        return self.info

    def describe(self, sensitivity: bool = True) -> ModelDescription:
        return describe(self.evaluator, self.spec, sensitivity)

    def run(self, job: TrialJob, board: Any = None) -> TrialOutcome:
        gate = None
        if board is not None and job.has_rungs:
            def gate(step: int, values: dict[str, float]) -> bool:
                """Post the rung and wait for the driver's decision (it answers within one
                poll of its loop; the driver's death kills this actor too)."""
                ray.get(board.post.remote(job.trial_id, step, values))
                while (stop := ray.get(board.decision.remote(job.trial_id, step))) is None:
                    time.sleep(0.02)
                return stop
        return run_job(self.evaluator, job, self.info, gate)


class RayPoolExecutor(Executor):
    """Trials on ``workers`` Ray actors.

    Args:
        spec: the study.
        workers: actors (trials in flight).
        num_cpus: CPUs each actor reserves; also its thread budget (rounded down, at least 1).
        num_gpus: GPUs each actor reserves, or ``"auto"`` (:mod:`.gpu_share`).
        address: a Ray cluster to join; default: start a local runtime.
        cancel: set to give up while the actors are starting.
        temp_dir: the local runtime's session folder.
        task: a task given in this process (Python API), shipped to every actor by value.
        ray_gpus: GPUs a local runtime started here offers (default: detected).
        gpu_sharers: pools like this one on the cluster at once.
        threads: each actor's thread budget (default: the spec's ``threads.worker``, else
            its ``num_cpus`` share).
    """

    def __init__(
        self,
        spec: StudySpec,
        workers: int = 1,
        num_cpus: float = 1.0,
        num_gpus: GpuRequest = "auto",
        address: str | None = None,
        cancel: threading.Event | None = None,
        temp_dir: str | None = None,
        task: Task | None = None,
        ray_gpus: int | None = None,
        gpu_sharers: int = 1,
        threads: int | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.spec = spec
        #: each worker's thread budget
        self.threads = resolve_threads(threads, spec.threads.worker, default=worker_threads(num_cpus))
        self.workers = workers
        self.num_cpus = num_cpus
        #: asked for ("auto" or a number); :attr:`share` is what each worker reserves
        self.num_gpus = num_gpus
        self.share = 0.0
        self.address = address
        self.temp_dir = temp_dir
        #: GPUs a local Ray runtime started here offers (default: detected)
        self.ray_gpus = ray_gpus
        #: pools like this one running on the cluster at once ("auto" splits the GPUs among them)
        self.gpu_sharers = gpu_sharers
        self.cancel = cancel
        #: a task given in this process (Python API): shipped to every worker by value
        self.task = task
        self._started_ray = False
        self._actors: list[Any] = []
        self._idle: list[int] = []
        self._inflight: dict[Any, tuple[int, TrialJob]] = {}
        self._spawned = 0
        self._board: Any = None
        self.replaced = 0

    @property
    def slots(self) -> int:
        return self.workers

    def _ensure_ray(self) -> None:
        # a failed start is cleaned up (ray.shutdown and the processes it left) before
        # RayStartError reaches the caller, so retrying a pool leaks no cluster
        if start_ray(RayOptions(address=self.address, temp_dir=self.temp_dir, num_gpus=self.ray_gpus)):
            self._started_ray = True

    def _spawn(self) -> Any:
        name = f"worker-{self._spawned}"
        self._spawned += 1
        actor_cls = ray.remote(TrialWorker).options(
            num_cpus=self.num_cpus, num_gpus=self.share, max_restarts=0, max_task_retries=0
        )
        return actor_cls.remote(self.spec.model_dump(mode="json"), name, self.task, self.share, self.threads)

    def _plan_gpus(self) -> None:
        """Each worker's GPU share, from the cluster's GPUs (raises GpuShareError if the
        request cannot be placed, before any worker starts)."""
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
        device = self.spec.measure.device
        uses_cuda = device == "cuda" or (device == "auto" and cluster_gpus >= 1)
        self.share = gpu_share(self.workers, self.num_gpus, cluster_gpus, uses_cuda, self.gpu_sharers)

    def start(self) -> ModelDescription:
        self._ensure_ray()
        self._plan_gpus()
        self._actors = [self._spawn() for _ in range(self.workers)]
        # every actor loads its model now, so the first trials do not pay for it
        refs = [actor.describe.remote(i == 0) for i, actor in enumerate(self._actors)]
        while True:  # wait in steps, so a stop or shutdown is not stuck behind pending actors
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=1.0)
            if len(ready) == len(refs):
                break
            if self.cancel is not None and self.cancel.is_set():
                raise StartCancelled("stopped while the workers were starting")
        descriptions = ray.get(refs)
        self._idle = list(range(self.workers))
        return descriptions[0]

    def submit(self, job: TrialJob) -> None:
        if not self._idle:
            raise RuntimeError("no idle worker: keep at most `slots` jobs in flight")
        index = self._idle.pop()
        board = None
        if self.rung_decider is not None and job.has_rungs:
            if self._board is None:
                self._board = ray.remote(RungBoard).options(num_cpus=0).remote()
            board = self._board
        ref = self._actors[index].run.remote(job, board)
        self._inflight[ref] = (index, job)

    def wait(self, timeout: float) -> list[TrialOutcome]:
        if not self._inflight:
            return []
        deadline = time.monotonic() + timeout
        while True:  # in short steps, answering the workers' rungs between them
            self._answer_rungs()
            step = 0.02 if self._board is not None else timeout
            ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=max(0.0, min(step, deadline - time.monotonic())))
            if ready or time.monotonic() >= deadline:
                break
        if ready:  # collect everything else that is already done as well
            ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=0)
        outcomes = []
        for ref in ready:
            index, job = self._inflight.pop(ref)
            try:
                outcome: TrialOutcome = ray.get(ref)
            except RayTaskError as exc:  # the call itself failed (e.g. could not be pickled)
                outcome = TrialOutcome(job, self._dead_info(index), error=str(exc))
            except RayError as exc:  # the actor died: exit, segfault, out-of-memory kill, lost node
                outcome = TrialOutcome(job, self._dead_info(index),
                                       error=f"worker died during the trial: {_first_line(exc)}")
                self._replace(index)
            outcomes.append(outcome)
            self._idle.append(index)
        return outcomes

    def _answer_rungs(self) -> None:
        if self._board is None or self.rung_decider is None:
            return
        for trial_id, step, values in ray.get(self._board.take_posts.remote()):
            try:
                stop = self.rung_decider(trial_id, step, values)
            except Exception:  # a decision that cannot be made lets the trial go on
                stop = False
            self._board.decide.remote(trial_id, step, stop)

    def _dead_info(self, index: int) -> WorkerInfo:
        return WorkerInfo(worker=f"slot-{index}", node="?", pid=-1)

    def _replace(self, index: int) -> None:
        try:
            ray.kill(self._actors[index])
        except Exception:  # already gone
            pass
        self._actors[index] = self._spawn()
        self.replaced += 1

    def close(self) -> None:
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:
                pass
        self._actors = []
        if self._board is not None:
            try:
                ray.kill(self._board)
            except Exception:
                pass
            self._board = None
        self._inflight.clear()
        if self._started_ray:
            stop_ray()  # and the agents the local runtime would leave behind for minutes
            self._started_ray = False


def _limit_gpu_memory(share: float) -> None:
    """A worker with a fraction of a GPU may allocate that fraction of its memory, so one
    worker's large trial fails alone (out of memory) instead of starving its neighbours."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(share)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return type(exc).__name__


def ship_by_value(*objects: Any) -> None:
    """Make Ray pickle the user's own modules (a notebook's, a script's, a test's) by value,
    so workers need not import them; installed packages are still imported by name."""
    import ray.cloudpickle as cloudpickle

    installed = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    classes = [type(o) for o in objects if not callable(o) or isinstance(o, nn.Module)]
    sources = [o for o in objects if callable(o) and not isinstance(o, nn.Module)]
    for module_name in {getattr(c, "__module__", None) for cls in classes for c in cls.__mro__} | {
        getattr(f, "__module__", None) for f in sources
    }:
        module = sys.modules.get(module_name or "")
        path = getattr(module, "__file__", None) or ""
        if module is None or module_name == "__main__" or module_name.split(".")[0] in ("paretoml", "torch"):
            continue
        if not path or any(path.startswith(root) for root in installed):
            continue
        try:
            cloudpickle.register_pickle_by_value(module)
        except ValueError:
            pass
