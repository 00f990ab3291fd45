"""JobScheduler: the service's runner workers.

Up to ``study_concurrency`` jobs run at once, each in its own thread driving a
:class:`StudyRunner` on a Ray pool. One bookkeeping thread claims queued jobs, beats for
the running ones (which is also how a stop request reaches a runner, even one on another
server) and queues again any job whose server went silent, so a killed server's jobs are
resumed by whichever server is up. The same thread starts Ray: a failed start is cleaned up
(:mod:`paretoml.service.ray_runtime`) and tried again after a capped exponential back-off,
and no job is claimed until Ray is up, so queued jobs wait.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

import optuna

from paretoml.search_space.trial_attrs import SPEC_ATTR
from paretoml.service.executors.ray_pool import RayPoolExecutor, StartCancelled
from paretoml.service.frontier import FrontierRecorder
from paretoml.service.jobs import Job, JobRepository, JobStatus, owner_name
from paretoml.service.mirror import MirroredStorage
from paretoml.service.ray_runtime import (
    RayOptions,
    RayStartError,
    note_local_processes,
    one_line,
    retry_delay,
    start_ray,
    stop_ray,
)
from paretoml.service.runner import StudyRunner, TooManyFailuresError, count_complete
from paretoml.service.settings import Settings
from paretoml.service.spec import SpecError, StudySpec, parse_spec
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
        #: set once the bookkeeping thread has started (or joined) Ray
        self.ray_ready = threading.Event()
        self._ray_failures = 0
        self._ray_error: str | None = None
        self._next_ray_attempt = 0.0  # time.monotonic() of the next start attempt
        self._ray_attempting = False

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self.settings.study_concurrency == 0:
            return
        self._loop_thread = threading.Thread(target=self._loop, name="paretoml-jobs", daemon=True)
        self._loop_thread.start()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop taking jobs; running ones finish their trials in flight and are queued again
        (a restart resumes them)."""
        if self._started_ray:  # while the thread that started Ray (and so its raylet) still lives
            note_local_processes()
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
            stop_ray()  # and the agents the local runtime would leave behind for minutes
            self._started_ray = False

    @property
    def running(self) -> list[str]:
        with self._lock:
            return list(self._threads)

    @property
    def ray_status(self) -> str:
        """What ``/health`` says of Ray: ``ok``, ``starting``, ``down: <reason>``, or ``off``
        for a server that runs no studies (it never starts Ray)."""
        if self.settings.study_concurrency == 0:
            return "off"
        if self.ray_ready.is_set():
            return "ok"
        error = self._ray_error
        if error is None:
            return "starting"
        if self._ray_attempting:
            return f"down: {error} (attempt {self._ray_failures} failed; trying again now)"
        wait = max(0.0, self._next_ray_attempt - time.monotonic())
        return f"down: {error} (attempt {self._ray_failures} failed; next in {wait:.0f} s)"

    # -- the bookkeeping loop ----------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closing.is_set():
            if not self.ray_ready.is_set() and time.monotonic() >= self._next_ray_attempt:
                # Ray is started from this thread, which lives as long as the server: Ray's
                # processes die with the thread that started them (parent-death signal).
                self._try_ray()
            try:
                self.tick()
            except Exception:  # the database may be briefly unavailable; try again next beat
                log.exception("job bookkeeping failed")
            wait = self.settings.job_heartbeat_s
            if not self.ray_ready.is_set():
                wait = min(wait, max(0.05, self._next_ray_attempt - time.monotonic()))
            self._closing.wait(wait)

    def _try_ray(self) -> None:
        """One attempt to start Ray; a failure is one log line and a longer wait."""
        self._ray_attempting = True
        try:
            self.ensure_ray()
        except Exception as exc:  # RayStartError, or anything else on the way: this thread must live on
            reason, cleaned = (exc.reason, exc.cleaned) if isinstance(exc, RayStartError) else (one_line(exc), 0)
            self._ray_failures += 1
            delay = retry_delay(self._ray_failures, self.settings.ray_retry_base_s, self.settings.ray_retry_max_s)
            self._next_ray_attempt = time.monotonic() + delay
            self._ray_error = reason
            log.warning("cannot start or join Ray (attempt %d): %s; ended %d leftover process(es); "
                        "next attempt in %.1f s", self._ray_failures, reason, cleaned, delay)
            return
        finally:
            self._ray_attempting = False
        if self._ray_failures:
            log.warning("Ray is up after %d failed attempt(s)", self._ray_failures)
        self._ray_error = None
        self.ray_ready.set()

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
        long as Ray should (the bookkeeping thread, or the main thread). Raises
        :class:`RayStartError` after cleaning up a failed start."""
        options = RayOptions(address=self.settings.ray_address, temp_dir=self.settings.ray_temp_dir)
        if start_ray(options):
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
                                   num_gpus=self.settings.worker_gpus, cancel=stop,
                                   gpu_sharers=max(1, self.settings.study_concurrency))
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
