"""StudyRunner: the ask/tell loop of one study, with heartbeats and resume.

The study is a plain Optuna study; the spec, the model's layer table and each trial's
per-layer config and provenance are kept as Optuna user attributes, so the database alone
is enough to resume a study or to read it with other Optuna tools.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator, resolve_device
from paretoml.objectives.measure import LatencySettings
from paretoml.objectives.tasks.registry import create_task
from paretoml.search_space.constraints import constraint_values
from paretoml.search_space.space import JointSpace
from paretoml.search_space.spec import SpecError, StudySpec, parse_spec
from paretoml.service.storage import Heartbeat, fail_stale_trials, study_exists
from paretoml.surrogates.registry import create_sampler

SPEC_ATTR = "paretoml:spec"
LAYERS_ATTR = "paretoml:layers"
REFERENCE_ATTR = "paretoml:reference"
CONFIG_ATTR = "paretoml:config"
PROVENANCE_ATTR = "paretoml:provenance"
ERROR_ATTR = "paretoml:error"
CONSTRAINTS_ATTR = "constraints"

ProgressCallback = Callable[[int, int, FrozenTrial | None], None]


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
    )


def build_evaluator(spec: StudySpec) -> TrialEvaluator:
    task = create_task(spec.task, spec.task_options)
    return TrialEvaluator(task, measure_settings(spec), resolve_device(spec.measure.device))


def build_space(spec: StudySpec, evaluator: TrialEvaluator) -> JointSpace:
    try:
        return JointSpace(spec.knobs, evaluator.layers, n_checkpoints=evaluator.n_checkpoints)
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def _constraints_func(trial: FrozenTrial) -> list[float]:
    return list(trial.user_attrs.get(CONSTRAINTS_ATTR, []))


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    return create_sampler(
        spec.sampler.name,
        spec.sampler.options,
        seed=spec.seed,
        constraints_func=_constraints_func if spec.constraints else None,
    )


def count_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


@dataclass
class StudyRunner:
    """Runs one study to its budget of completed trials, in this process."""

    study: optuna.Study
    spec: StudySpec
    evaluator: TrialEvaluator
    space: JointSpace
    max_consecutive_failures: int = 5

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, spec: StudySpec, storage: BaseStorage, study_name: str) -> StudyRunner:
        """Validate everything against the real model, then create the study."""
        if study_exists(storage, study_name):
            raise StudyExistsError(f"study {study_name!r} already exists; continue it with `paretoml resume {study_name}`")
        evaluator = build_evaluator(spec)
        space = build_space(spec, evaluator)
        baselines = [space.uniform_params(bits=b, prune=0.0) for b in spec.baselines]
        study = optuna.create_study(
            storage=storage, study_name=study_name, directions=spec.directions, sampler=make_sampler(spec)
        )
        study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
        study.set_user_attr(LAYERS_ATTR, [_layer_row(layer) for layer in evaluator.layers])
        reference = evaluator.reference(spec.objective_names)
        study.set_user_attr(REFERENCE_ATTR, {**reference.values, **{k: v for k, v in reference.attrs.items()
                                                                   if k != "timings"}})
        for bits, params in zip(spec.baselines, baselines):
            study.enqueue_trial(params, user_attrs={"paretoml:baseline": f"uniform {bits}-bit"})
        return cls(study, spec, evaluator, space)

    @classmethod
    def resume(cls, storage: BaseStorage, study_name: str) -> StudyRunner:
        if not study_exists(storage, study_name):
            raise StudyNotFoundError(f"no study named {study_name!r} in this storage")
        summary = optuna.load_study(study_name=study_name, storage=storage)
        raw = summary.user_attrs.get(SPEC_ATTR)
        if raw is None:
            raise SpecError(f"study {study_name!r} was not made by paretoml (it has no stored spec)")
        spec = parse_spec(raw)
        evaluator = build_evaluator(spec)
        space = build_space(spec, evaluator)
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(spec))
        evaluator.reference(spec.objective_names)  # warm-up, so latencies stay comparable
        return cls(study, spec, evaluator, space)

    # -- the loop -----------------------------------------------------------------------
    def reclaim_stale_trials(self, wait: bool = True) -> None:
        """Fail and re-queue trials whose process died (no heartbeat for the grace period).

        With ``wait``, trials still RUNNING but not yet stale (a process that died moments
        ago looks just like a slow one) are given up to the grace period to go stale or
        finish, so that a resume retries them first.
        """
        backend = self.study._storage
        backend = getattr(backend, "_backend", backend)  # Optuna wraps RDBStorage in a cache
        interval = getattr(backend, "heartbeat_interval", None)
        if interval is None:
            return
        grace = getattr(backend, "grace_period", None) or 2 * interval
        deadline = time.monotonic() + (grace + 2 * interval if wait else 0)
        while True:
            fail_stale_trials(self.study)
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or time.monotonic() >= deadline:
                return
            time.sleep(min(interval, 1.0))

    def run(self, progress: ProgressCallback | None = None) -> optuna.Study:
        self.reclaim_stale_trials()
        budget = self.spec.n_trials
        done = count_complete(self.study)
        failures = 0
        if progress:
            progress(done, budget, None)
        while done < budget:
            self.reclaim_stale_trials(wait=False)
            trial = self.study.ask()
            frozen = self._run_trial(trial)
            if frozen is not None and frozen.state == TrialState.COMPLETE:
                done += 1
                failures = 0
            else:
                failures += 1
                if failures >= self.max_consecutive_failures:
                    error = frozen.user_attrs.get(ERROR_ATTR, "") if frozen else ""
                    raise TooManyFailuresError(
                        f"{failures} trials failed in a row; the last error: {error.splitlines()[-1] if error else '?'}"
                    )
            if progress:
                progress(done, budget, frozen)
        return self.study

    def _run_trial(self, trial: optuna.Trial) -> FrozenTrial | None:
        names = self.spec.objective_names
        with Heartbeat(self.study._storage, trial._trial_id):
            try:
                config = self.space.suggest(trial)
                trial.set_user_attr(CONFIG_ATTR, config.to_dict())
                if self.spec.constraints:
                    trial.set_user_attr(
                        CONSTRAINTS_ATTR,
                        constraint_values(self.spec.constraints, self.evaluator.layers, config,
                                          self.evaluator.other_params),
                    )
                result = self.evaluator.evaluate(config, names, seed=self.spec.seed + trial.number)
            except KeyboardInterrupt:
                # give the trial back to the queue: a resume runs it again
                self.study.tell(trial, state=TrialState.FAIL)
                self.study.enqueue_trial(trial.params, user_attrs={"paretoml:retry_of": trial.number})
                raise
            except Exception:
                trial.set_user_attr(ERROR_ATTR, traceback.format_exc(limit=8))
                return self.study.tell(trial, state=TrialState.FAIL)
            trial.set_user_attr(PROVENANCE_ATTR, result.provenance)
            for key, value in result.attrs.items():
                trial.set_user_attr(f"paretoml:{key}", value)
            return self.study.tell(trial, [result.values[n] for n in names])


def _layer_row(layer: Any) -> dict[str, Any]:
    row = asdict(layer)
    row["link"] = json.loads(json.dumps(row["link"])) if row["link"] else None
    row["weight_shape"] = list(layer.weight_shape)
    return row
