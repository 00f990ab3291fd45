"""JobScheduler: the service's runner workers.

Up to ``study_concurrency`` jobs run at once, each in its own thread driving a
:class:`StudyRunner` on a Ray pool. One bookkeeping thread claims queued jobs, beats for
the running ones (which is also how a stop request reaches a runner, even one on another
server) and queues again any job whose server went silent, so a killed server's jobs are
resumed by whichever server is up.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

import optuna

from paretoml.search_space.spec import SpecError, StudySpec, parse_spec
from paretoml.service.executors.ray_pool import RayPoolExecutor, StartCancelled
from paretoml.service.frontier import FrontierRecorder
from paretoml.service.mirror import MirroredStorage
from paretoml.service.jobs import Job, JobRepository, JobStatus, owner_name
from paretoml.service.runner import SPEC_ATTR, StudyRunner, TooManyFailuresError, count_complete
from paretoml.service.settings import Settings
from paretoml.service.storage import open_durable_storage, study_exists

log = logging.getLogger("paretoml.scheduler")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:500]


class JobScheduler:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.database_url
        self.jobs = JobRepository(self.url)
        self.owner = owner_name("server")
        #: one stop event per running job: set by a stop request or by shutdown
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._started_ray = False
        self._ray_lock = threading.Lock()
        #: set once the bookkeeping thread has started (or joined) Ray
        self.ray_ready = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self.settings.study_concurrency == 0:
            return
        self._loop_thread = threading.Thread(target=self._loop, name="paretoml-jobs", daemon=True)
        self._loop_thread.start()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop taking jobs; running ones finish their trials in flight and are queued again
        (a restart resumes them)."""
        self._closing.set()
        with self._lock:
            stops = list(self._stops.values())
            threads = list(self._threads.values())
        for stop in stops:
            stop.set()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout)
        for thread in threads:
            thread.join(timeout)
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    @property
    def running(self) -> list[str]:
        with self._lock:
            return list(self._threads)

    # -- the bookkeeping loop ----------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                if not self.ray_ready.is_set():
                    # Ray is started from this thread, which lives as long as the server: Ray's
                    # processes die with the thread that started them (parent-death signal).
                    self.ensure_ray()
                    self.ray_ready.set()
            except Exception:
                log.exception("cannot start or join Ray; retrying")
            try:
                self.tick()
            except Exception:  # the database may be briefly unavailable; try again next beat
                log.exception("job bookkeeping failed")
            self._closing.wait(self.settings.job_heartbeat_s)

    def tick(self) -> None:
        statuses = self.jobs.beat(self.running, self.owner)
        with self._lock:
            for job_id, status in statuses.items():
                stop = self._stops.get(job_id)
                if status == JobStatus.stopping.value and stop is not None:
                    stop.set()
        for job_id in self.jobs.requeue_orphans(self.settings.job_grace_s):
            log.warning("job %s lost its server; queued again to resume", job_id)
        while (self.ray_ready.is_set() and not self._closing.is_set()
               and len(self.running) < self.settings.study_concurrency):
            job = self.jobs.claim_next(self.owner)
            if job is None:
                break
            thread = threading.Thread(target=self._run, args=(job,), name=f"paretoml-job-{job.id}", daemon=True)
            with self._lock:
                self._threads[job.id] = thread
            thread.start()

    # -- one job -------------------------------------------------------------------------
    def ensure_ray(self) -> None:
        """Start (or join) Ray once; idempotent. Call it only from a thread that lives as
        long as Ray should (the bookkeeping thread, or the main thread)."""
        import ray

        with self._ray_lock:
            if ray.is_initialized():
                return
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
            if self.settings.ray_address:
                kwargs["address"] = self.settings.ray_address
            ray.init(**kwargs)
            self._started_ray = True

    def _run(self, job: Job) -> None:
        outcome, error = JobStatus.failed, None
        try:
            outcome = self._drive(job)
        except (SpecError, TooManyFailuresError) as exc:
            error = str(exc)
        except Exception as exc:
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            error = _one_line(exc)
        finally:
            with self._lock:
                self._stops.pop(job.id, None)
                self._threads.pop(job.id, None)
            if outcome is JobStatus.queued:  # server shutting down: leave it for the next start
                self.jobs.requeue(job.id, self.owner)
            else:
                self.jobs.finish(job.id, outcome, error)

    def _drive(self, job: Job) -> JobStatus:
        import ray

        spec = parse_spec(job.spec)
        if not ray.is_initialized():
            raise RuntimeError("Ray is not running in this server")
        storage = open_durable_storage(self.url)
        try:
            return self._drive_on(job, spec, storage)
        finally:
            storage.rdb.engine.dispose()

    def _drive_on(self, job: Job, spec: StudySpec, storage: MirroredStorage) -> JobStatus:
        _drop_unfinished_creation(storage, job.id)
        stop = threading.Event()
        with self._lock:
            self._stops[job.id] = stop
            if self._closing.is_set():
                stop.set()
        if self.jobs.get(job.id).status == JobStatus.stopping.value:
            stop.set()
        executor = RayPoolExecutor(spec, workers=self.settings.workers_per_study, num_cpus=self.settings.worker_cpus,
                                   num_gpus=self.settings.worker_gpus, cancel=stop)
        with executor:
            try:
                if study_exists(storage, job.id):
                    runner = StudyRunner.resume(storage, job.id, executor)
                else:
                    runner = StudyRunner.create(spec, storage, job.id, executor)
            except StartCancelled:
                return self._interrupted(job.id)
            runner.stop_event = stop
            runner.on_trial.append(FrontierRecorder(self.url, runner.study, spec.objective_names,
                                                    runner.model.reference))
            runner.run()
            if count_complete(runner.study) >= spec.n_trials:
                return JobStatus.completed
        return self._interrupted(job.id)

    def _interrupted(self, job_id: str) -> JobStatus:
        """A job that ended before its budget: stopped on request, or queued again when the
        server is shutting down."""
        return JobStatus.queued if self._closing.is_set() and not self._stop_requested(job_id) else JobStatus.stopped

    def _stop_requested(self, job_id: str) -> bool:
        return self.jobs.get(job_id).status == JobStatus.stopping.value


def _drop_unfinished_creation(storage: optuna.storages.BaseStorage, name: str) -> None:
    """A server killed while creating a study can leave one without its spec and with no
    trials: it holds nothing, so it is made again."""
    if not study_exists(storage, name):
        return
    study_id = storage.get_study_id_from_name(name)
    if SPEC_ATTR not in storage.get_study_user_attrs(study_id) and not storage.get_all_trials(study_id, deepcopy=False):
        storage.delete_study(study_id)
