"""StudyRunner: the asynchronous ask/tell loop of one study, with heartbeats and resume.

The runner keeps up to ``executor.slots`` trials in flight: it asks the sampler for a trial
whenever a worker is free and tells the study each result as it arrives. TPE's
constant-liar (on by default in Optuna) keeps parallel suggestions apart. The loop never
has more trials in flight than the budget still needs, so it ends exactly at the budget.

The study is a plain Optuna study; the spec, the model's layer table and each trial's
per-layer config and provenance are Optuna user attributes, so the database alone is
enough to resume a study or to read it with other Optuna tools.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from paretoml.objectives.evaluate import KNOWN_BEFORE_EVALUATION, MeasureSettings, TrialEvaluator, resolve_device
from paretoml.objectives.measure import LatencySettings
from paretoml.objectives.tasks.base import Task
from paretoml.objectives.tasks.registry import create_task
from paretoml.search_space.constraints import constraint_keys, constraint_values, needs_measurement
from paretoml.search_space.coverage import coverage
from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.space import JointSpace, TrialConfig
from paretoml.search_space.trial_attrs import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    COVERAGE_ATTR,
    DROPPED_CHOICES_ATTR,
    ERROR_ATTR,
    LAYERS_ATTR,
    PROVENANCE_ATTR,
    REFERENCE_ATTR,
    RETRY_OF_ATTR,
    RUNG_UNIT_ATTR,
    RUNGS_ATTR,
    SENSITIVITY_ATTR,
    SPEC_ATTR,
    STOPPED_AT_ATTR,
    TIMINGS_ATTR,
    WORKER_ATTR,
    result_attr,
)
from paretoml.service.executors.base import Executor, ModelDescription, TrialJob, TrialOutcome
from paretoml.service.spec import SpecError, StudySpec, parse_spec
from paretoml.service.storage import fail_stale_trials, heartbeat_warnings_silenced, study_exists
from paretoml.surrogates.optuna_compat import heartbeat_enabled, storage_backend, study_storage, trial_id
from paretoml.surrogates.pruners import create_pruner
from paretoml.surrogates.registry import create_sampler
from paretoml.surrogates.kv_sensitivity import kv_warm_start_allocations
from paretoml.surrogates.transfer import TransferError, check_sources
from paretoml.surrogates.sensitivity import sensitivity_attr, warm_start_allocations

#: ERROR_ATTR of a trial failed because its runner went away, not because of its config
INTERRUPTED_STALE = "interrupted: its runner stopped (no heartbeat for the grace period); retried with the same parameters"
INTERRUPTED_STOP = "interrupted: its runner stopped while it ran; queued again with the same parameters"

ProgressCallback = Callable[[int, int, FrozenTrial | None], None]
TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


class StudyExistsError(ValueError):
    pass


class StudyNotFoundError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class TooManyFailuresError(RuntimeError):
    pass


def measure_settings(spec: StudySpec) -> MeasureSettings:
    return MeasureSettings(
        latency=LatencySettings(
            batch_size=spec.task_options.get("latency_batch", 32),
            warmup=spec.measure.latency_warmup,
            repeats=spec.measure.latency_repeats,
            threads=spec.measure.latency_threads,
        ),
        finetune_steps=spec.finetune.steps,
        default_batch_size=spec.finetune.batch_size,
        default_learning_rate=spec.finetune.learning_rate,
        deploy=spec.deploy.to_mode(),
    )


def build_evaluator(spec: StudySpec, task: Task | None = None) -> TrialEvaluator:
    """What every worker builds once: the task's model and data, ready for trials.

    ``task`` is a task given in this process (the Python API); otherwise the spec's task is
    created by its registered name."""
    if task is None:
        task = create_task(spec.task, spec.task_options)
    return TrialEvaluator(task, measure_settings(spec), resolve_device(spec.measure.device))


def build_space(spec: StudySpec, layers: list[LayerInfo], n_checkpoints: int,
                kernel_choices: dict[str, dict[str, list[Any]]] | None = None) -> JointSpace:
    """The study's space; ``kernel_choices`` (the workers' answer for their device) keeps
    only the choices with a kernel of their own format there (runtime deployment)."""
    try:
        return JointSpace(spec.knobs, layers, n_checkpoints=n_checkpoints, allowed=kernel_choices)
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def check_transfer(spec: StudySpec, storage: BaseStorage, layers: list[LayerInfo]) -> None:
    """Refuse, before the study is made, source studies the sampler cannot learn from (a
    SpecError naming why: the CLI exits 2 on it)."""
    names = spec.sampler.options.get("transfer_from") or []
    if not names:
        return
    try:
        check_sources(storage, names, [(o.name, o.resolved_direction) for o in spec.objectives],
                      {layer.kind for layer in layers})
    except TransferError as exc:
        raise SpecError(f"sampler.options.{exc}") from None


def measured_values(outcome: TrialOutcome) -> dict[str, float]:
    """The trial's objectives and, when model_bytes is none of them, the bytes the evaluator
    counted on the same model: what a size budget is checked against."""
    values = dict(outcome.values or {})
    if "model_bytes" not in values and "model_bytes" in outcome.attrs:
        values["model_bytes"] = float(outcome.attrs["model_bytes"])
    return values


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The study's sampler. Constraints reach it on the trials (``trial.constraints``, set
    by the runner with Optuna's ``Trial.set_constraint``), not through a function."""
    return create_sampler(spec.sampler.name, spec.sampler.options, seed=spec.seed)


def make_pruner(spec: StudySpec, validation_samples: int | None = None) -> optuna.pruners.BasePruner:
    """The study's pruner; its largest step is the full fine-tune, or the validation split's
    samples for rungs over evaluation size (None: Optuna learns it from the first trial)."""
    last = spec.finetune.steps if spec.pruner.over == "finetune" else validation_samples
    return create_pruner(spec.pruner.name, spec.pruner.options, len(spec.objectives), last)


#: What a rung's step counts (stored under RUNG_UNIT_ATTR), by spec.pruner.over.
RUNG_UNITS = {"finetune": "fine-tune step", "evaluation": "validation samples"}


def rung_objective(spec: StudySpec, values: dict[str, float]) -> str | None:
    """The objective stored as a rung's Optuna intermediate value: the study's own objective
    when single-objective, else its first task metric (the one that changes with tuning)."""
    names = [n for n in spec.objective_names if n in values]
    if len(spec.objectives) > 1:
        names = [n for n in names if n not in KNOWN_BEFORE_EVALUATION] or names
    return names[0] if names else None


def name_metrics(study: optuna.Study, spec: StudySpec) -> None:
    """Store the objectives' names in the study (Optuna's metric names), so that plain Optuna,
    its plots and optuna-dashboard label the values "accuracy", "model_bytes", ... rather
    than "Objective 0", "Objective 1"."""
    if study.metric_names == spec.objective_names:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names, since 3.2
        study.set_metric_names(spec.objective_names)


def count_complete(study: optuna.Study) -> int:
    """Trials that spent their part of the budget: complete ones and those a pruner stopped."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class HeartbeatPump:
    """Beats for every in-flight trial, from a thread, every heartbeat interval."""

    def __init__(self, storage: BaseStorage, interval: float) -> None:
        self._storage = storage
        self._enabled = heartbeat_enabled(storage)
        self._interval = interval
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="paretoml-heartbeat", daemon=True)

    def __enter__(self) -> HeartbeatPump:
        if self._enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._enabled:
            self._thread.join()

    def add(self, trial_id: int) -> None:
        if not self._enabled:
            return
        with self._lock:
            self._trial_ids.add(trial_id)
        self._beat([trial_id])

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def _beat(self, trial_ids: list[int]) -> None:
        batch = getattr(self._storage, "record_heartbeats", None)
        if batch is not None:
            batch(trial_ids)
        else:
            for trial_id in trial_ids:
                self._storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._trial_ids)
            if ids:
                try:
                    self._beat(ids)
                except Exception:  # a missed beat is retried next interval
                    pass


def spread_over(items: list[Any], n: int) -> list[Any]:
    """``n`` of ``items`` evenly spaced, both ends kept (all of them when they fit): a study
    too small for the whole warm-start ladder still starts at its small and its large end."""
    if n >= len(items):
        return list(items)
    if n <= 1:
        return list(items[:n])
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


@dataclass
class StudyRunner:
    """Runs one study to its budget of completed trials on an executor."""

    study: optuna.Study
    spec: StudySpec
    space: JointSpace
    model: ModelDescription
    executor: Executor
    on_trial: list[TrialCallback] = field(default_factory=list)
    max_consecutive_failures: int = 0
    #: Set from another thread to stop gracefully: no new trials, in-flight ones finish.
    stop_event: threading.Event = field(default_factory=threading.Event)
    #: decides at each rung whether a trial goes on (Optuna's NopPruner when the spec has none)
    pruner: optuna.pruners.BasePruner | None = None

    def __post_init__(self) -> None:
        self._inflight: dict[int, optuna.Trial] = {}
        #: how much of the model the knobs reach (printed when a study starts)
        self.coverage = coverage(self.model.layers, self.space, self.model.other_params)
        self._suggest_s: dict[int, float] = {}  # trial id -> seconds of ask + the knobs' suggestions
        if self.pruner is None:
            self.pruner = make_pruner(self.spec, self.model.validation_samples)
        if self.spec.pruner.name != "none":
            self.executor.rung_decider = self._decide_rung

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, spec: StudySpec, storage: BaseStorage, study_name: str, executor: Executor) -> StudyRunner:
        """Validate the spec against the real model (loaded by the workers), then create the study."""
        if study_exists(storage, study_name):
            raise StudyExistsError(f"study {study_name!r} already exists; continue it with `paretoml resume {study_name}`")
        model = executor.start()
        space = build_space(spec, model.layers, model.n_checkpoints, model.kernel_choices)
        check_transfer(spec, storage, model.layers)
        try:
            baselines = [space.uniform_params(bits=b, prune=0.0) for b in spec.baselines]
        except ValueError as exc:  # the spec's own check catches this; the space has the last word
            raise SpecError(f"baselines: {exc}") from None
        warm: list[dict[str, Any]] = []
        if spec.warm_start is not None and (model.sensitivity or model.kv_sensitivity):
            start = space.uniform_params(prune=0.0)
            fractions = spec.warm_start.fractions
            weights = [space.with_allocation(start, allocation)
                       for allocation in warm_start_allocations(model.sensitivity or [], model.layers, fractions)]
            caches = kv_warm_start_allocations(model.kv_sensitivity or [], fractions)
            # the i-th tightest weight allocation beside the i-th tightest KV allocation
            warm = [space.with_layer_kv(weights[i] if i < len(weights) else start, caches[i] if i < len(caches) else {})
                    for i in range(max(len(weights), len(caches)))]
            if not warm:
                raise SpecError(f"warm_start.fractions: no budget of {fractions} (fractions of the layers' "
                                "bytes at uniform 8 bits, as deployed) can be met by the choices the device offers; "
                                "add larger fractions")
        study = optuna.create_study(
            storage=storage, study_name=study_name, directions=spec.directions, sampler=make_sampler(spec),
            pruner=make_pruner(spec, model.validation_samples),
        )
        name_metrics(study, spec)
        study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
        study.set_user_attr(LAYERS_ATTR, [_layer_row(layer) for layer in model.layers])
        study.set_user_attr(REFERENCE_ATTR, model.reference)
        if model.sensitivity:  # per-layer features of a later study's transfer read them
            study.set_user_attr(SENSITIVITY_ATTR, sensitivity_attr(model.sensitivity))
        study.set_user_attr(COVERAGE_ATTR, coverage(model.layers, space, model.other_params).to_dict())
        if space.dropped:
            study.set_user_attr(DROPPED_CHOICES_ATTR, {"device": model.device, "dropped": space.dropped})
        for bits, params in zip(spec.baselines, baselines):
            study.enqueue_trial(params, user_attrs={BASELINE_ATTR: f"uniform {bits}-bit"})
        for params in spread_over(warm, max(0, spec.n_trials - len(baselines))):
            study.enqueue_trial(params, user_attrs={BASELINE_ATTR: "sensitivity warm start"})
        return cls(study, spec, space, model, executor, pruner=study.pruner)

    @classmethod
    def load_spec(cls, storage: BaseStorage, study_name: str) -> StudySpec:
        if not study_exists(storage, study_name):
            raise StudyNotFoundError(f"no study named {study_name!r} in this storage")
        raw = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name)).get(SPEC_ATTR)
        if raw is None:
            raise SpecError(f"study {study_name!r} was not made by paretoml (it has no stored spec)")
        return parse_spec(raw)

    @classmethod
    def resume(cls, storage: BaseStorage, study_name: str, executor: Executor) -> StudyRunner:
        spec = cls.load_spec(storage, study_name)
        model = executor.start()
        space = build_space(spec, model.layers, model.n_checkpoints, model.kernel_choices)
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(spec),
                                  pruner=make_pruner(spec, model.validation_samples))
        name_metrics(study, spec)  # studies made before the names were stored get them now
        return cls(study, spec, space, model, executor, pruner=study.pruner)

    # -- heartbeats and stale trials --------------------------------------------------------
    def _heartbeat_settings(self) -> tuple[float | None, float]:
        storage = study_storage(self.study)
        backend = storage_backend(storage)
        interval = getattr(backend, "heartbeat_interval", None)
        grace = getattr(backend, "grace_period", None) or (2 * interval if interval else 0)
        return interval, grace

    def reclaim_stale_trials(self, wait: bool = True) -> None:
        """Fail and re-queue trials whose process died (no heartbeat for the grace period).

        With ``wait``, trials still RUNNING but not yet stale (a process that died moments
        ago looks just like a slow one) are given up to the grace period to go stale or
        finish, so that a resume retries them first.
        """
        interval, grace = self._heartbeat_settings()
        if interval is None:
            return
        deadline = time.monotonic() + (grace + 2 * interval if wait else 0)
        while True:
            fail_stale_trials(self.study, {ERROR_ATTR: INTERRUPTED_STALE})
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or time.monotonic() >= deadline:
                return
            time.sleep(min(interval, 1.0))

    # -- the loop -----------------------------------------------------------------------
    def run(self, progress: ProgressCallback | None = None, budget: int | None = None) -> optuna.Study:
        """Run until the budget of completed trials (the spec's ``n_trials`` unless given), or
        until ``stop_event`` is set (then the trials in flight finish and are stored before
        this returns)."""
        self.reclaim_stale_trials()
        budget = self.spec.n_trials if budget is None else budget
        done = count_complete(self.study)
        failures = 0
        limit = self.max_consecutive_failures or max(5, 2 * self.executor.slots)
        interval, _ = self._heartbeat_settings()
        inflight = self._inflight
        last_reclaim = time.monotonic()
        if progress:
            progress(done, budget, None)
        with HeartbeatPump(study_storage(self.study), interval or 1.0) as pump:
            try:
                while done < budget and (inflight or not self.stop_event.is_set()):
                    while (len(inflight) < self.executor.slots and done + len(inflight) < budget
                           and not self.stop_event.is_set()):
                        started = time.perf_counter()
                        with heartbeat_warnings_silenced():
                            trial = self.study.ask()
                        job = self._prepare(trial)
                        self._suggest_s[trial_id(trial)] = time.perf_counter() - started
                        pump.add(trial_id(trial))
                        if job is None:
                            pump.discard(trial_id(trial))
                            self._suggest_s.pop(trial_id(trial), None)
                            failures += 1
                            if failures >= limit:  # a suggestion that always fails must not spin here
                                break
                            continue
                        inflight[trial_id(trial)] = trial
                        self.executor.submit(job)
                    for outcome in self.executor.wait(timeout=interval or 1.0):
                        trial = inflight.pop(outcome.job.trial_id)
                        frozen = self._finish(trial, outcome)
                        pump.discard(trial_id(trial))
                        if frozen.state in (TrialState.COMPLETE, TrialState.PRUNED):
                            done += 1
                            failures = 0
                        else:
                            failures += 1
                        if progress:
                            progress(done, budget, frozen)
                    if failures >= limit:
                        raise TooManyFailuresError(f"{failures} trials failed in a row; the last error: "
                                                   f"{self._last_error()}")
                    if interval and time.monotonic() - last_reclaim > interval:
                        self.reclaim_stale_trials(wait=False)
                        last_reclaim = time.monotonic()
            except BaseException:
                self._give_back(inflight)
                raise
        return self.study

    def _last_error(self) -> str:
        """The last line (for a traceback, the exception) of the error of the trial that failed last."""
        failed = self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if not failed:
            return "?"
        last = max(failed, key=lambda t: (t.datetime_complete is not None, t.datetime_complete or 0, t.number))
        error = str(last.user_attrs.get(ERROR_ATTR) or "").strip()
        return f"trial {last.number}: {error.splitlines()[-1] if error else '?'}"

    def _prepare(self, trial: optuna.Trial) -> TrialJob | None:
        """Draw the trial's parameters and make them durable before it runs."""
        try:
            config = self.space.suggest(trial)
            trial.set_user_attr(CONFIG_ATTR, config.to_dict())
        except Exception as exc:
            trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {exc}")
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        finally:
            flush = getattr(study_storage(self.study), "flush", None)
            if flush is not None:
                flush(trial_id(trial))
        extra = [n for n in needs_measurement(self.spec.constraints, self.spec.deploy.to_mode())
                 if n not in self.spec.objective_names]
        pruner = self.spec.pruner
        evaluation = tuple(pruner.rungs) if pruner.name != "none" and pruner.over == "evaluation" else ()
        return TrialJob(trial_id(trial), trial.number, config.to_dict(), self.spec.objective_names + extra,
                        self.spec.seed + trial.number, tuple(pruner.steps(self.spec.finetune.steps)), evaluation)

    def _decide_rung(self, trial_id: int, step: int, values: dict[str, float]) -> bool:
        """Store a rung (Optuna intermediate value, and every measurable objective in
        ``paretoml:rungs``) and ask the pruner whether the trial stops there. Baselines and
        warm starts are never stopped: they are the study's reference points."""
        trial = self._inflight[trial_id]
        rungs = dict(trial.user_attrs.get(RUNGS_ATTR, {}))
        rungs[str(step)] = {k: float(v) for k, v in values.items()}
        trial.set_user_attr(RUNGS_ATTR, rungs)
        if RUNG_UNIT_ATTR not in trial.user_attrs:
            trial.set_user_attr(RUNG_UNIT_ATTR, RUNG_UNITS[self.spec.pruner.over])
        name = rung_objective(self.spec, values)
        if name is not None:
            study_storage(self.study).set_trial_intermediate_value(trial_id, step, float(values[name]))
        frozen = study_storage(self.study).get_trial(trial_id)
        if BASELINE_ATTR in frozen.user_attrs:
            return False
        assert self.pruner is not None
        return bool(self.pruner.prune(self.study, frozen))

    def _set_constraints(self, trial: optuna.Trial, outcome: TrialOutcome, measured: bool) -> None:
        """Store the trial's budget values where Optuna keeps them (``trial.constraints``), so
        every sampler, ``best_trials`` and optuna-dashboard tell a budget-breaking trial from a
        feasible one. Set once, before ``tell``: the samplers read them in ``after_trial``."""
        config = TrialConfig.from_dict(outcome.job.config)
        values = constraint_values(self.spec.constraints, self.model.layers, config, self.model.other_params,
                                   measured_values(outcome) if measured else None)
        for key, value in zip(constraint_keys(self.spec.constraints), values):
            trial.set_constraint(key, value)

    def _finish(self, trial: optuna.Trial, outcome: TrialOutcome) -> FrozenTrial:
        trial.set_user_attr(WORKER_ATTR, asdict(outcome.worker))
        suggest = {"suggest_s": self._suggest_s.pop(trial_id(trial), None)}
        trial.set_user_attr(TIMINGS_ATTR, {**outcome.attrs.get("timings", {}), **suggest})
        if outcome.stopped_at is not None:
            trial.set_user_attr(STOPPED_AT_ATTR, outcome.stopped_at)
            if self.spec.constraints and not needs_measurement(self.spec.constraints, self.spec.deploy.to_mode()):
                self._set_constraints(trial, outcome, measured=False)  # the config's bound: never taken for feasible
            frozen = self.study.tell(trial, state=TrialState.PRUNED)
        elif not outcome.ok or outcome.values is None or unusable_values(outcome.values, self.spec.objective_names):
            error = outcome.error or unusable_values(outcome.values or {}, self.spec.objective_names) or "no values"
            trial.set_user_attr(ERROR_ATTR, error)
            frozen = self.study.tell(trial, state=TrialState.FAIL)
        else:
            trial.set_user_attr(PROVENANCE_ATTR, outcome.provenance)
            if self.spec.constraints:  # from what the trial measured: its latency and its own bytes
                self._set_constraints(trial, outcome, measured=True)
            for key, value in outcome.attrs.items():
                if key != "timings":  # stored above, with the suggestion's seconds
                    trial.set_user_attr(result_attr(key), value)
            name = rung_objective(self.spec, outcome.values) if outcome.job.has_rungs else None
            last = (self.spec.finetune.steps if not outcome.job.evaluation_rungs
                    else outcome.attrs.get("validation_samples"))
            if name is not None and last:  # the last point of the curve: the full trial
                study_storage(self.study).set_trial_intermediate_value(
                    trial_id(trial), int(last), float(outcome.values[name]))
            frozen = self.study.tell(trial, [outcome.values[n] for n in self.spec.objective_names])
        for callback in self.on_trial:
            callback(self.study, frozen)
        return frozen

    def _give_back(self, inflight: dict[int, optuna.Trial]) -> None:
        """On interrupt: fail the trials in flight and queue them again for a resume."""
        for trial in inflight.values():
            try:
                trial.set_user_attr(ERROR_ATTR, INTERRUPTED_STOP)
                self.study.tell(trial, state=TrialState.FAIL)
                self.study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: trial.number})
            except Exception:  # the storage may be what failed; heartbeats cover that case
                pass


def unusable_values(values: dict[str, Any], names: list[str]) -> str | None:
    """Why a trial's objective values cannot be told to Optuna (which fails a trial with a NaN
    without saying why), or None when they can."""
    missing = [n for n in names if n not in values]
    if missing:
        return f"the evaluation returned no value for {', '.join(missing)} (it returned {', '.join(values) or 'none'})"
    bad = []
    for name in names:
        try:
            number = float(values[name])
        except (TypeError, ValueError):
            number = math.nan
        if math.isnan(number):
            bad.append(f"{name} = {values[name]!r}")
    if bad:
        return f"the evaluation returned values that are not numbers: {', '.join(bad)}"
    return None


def _layer_row(layer: LayerInfo) -> dict[str, Any]:
    row = asdict(layer)
    row["weight_shape"] = list(layer.weight_shape)
    return row
