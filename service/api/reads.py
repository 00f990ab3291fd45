"""What the API reads: jobs from the jobs table, trials and fronts from the study database.

Trials are read through Optuna's cached RDB storage, which keeps finished trials in
memory and fetches only new or unfinished ones on each call, so polling a study of
thousands of trials costs one small query.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from paretoml.search_space.trial_attrs import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    ERROR_ATTR,
    LAYERS_ATTR,
    OPTUNA_RETRY_ATTR,
    PROVENANCE_ATTR,
    REFERENCE_ATTR,
    RETRY_OF_ATTR,
    RUNGS_ATTR,
    RUNG_UNIT_ATTR,
    STOPPED_AT_ATTR,
    WORKER_ATTR,
)
from paretoml.service.api import schemas
from paretoml.service.api.importances import Importances, study_importances
from paretoml.service.db.models import Job
from paretoml.service.frontier import is_feasible, reference_point, stored_constraints, stored_front, stored_history
from paretoml.service.jobs import PYTHON_SOURCE, JobRepository, JobStatus
from paretoml.service.storage import open_storage

STATE_NAMES: dict[TrialState, schemas.TrialStateName] = {
    TrialState.COMPLETE: "complete", TrialState.RUNNING: "running", TrialState.FAIL: "fail",
    TrialState.PRUNED: "pruned", TrialState.WAITING: "waiting",
}
STATES_BY_NAME = {name: state for state, name in STATE_NAMES.items()}


def _objectives(spec: dict[str, Any]) -> list[schemas.Objective]:
    from paretoml.service.spec import StudySpec

    parsed = StudySpec.model_validate(spec)
    return [schemas.Objective(name=o.name, direction=o.resolved_direction) for o in parsed.objectives]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


class StudyReads:
    def __init__(self, url: str, jobs: JobRepository) -> None:
        self.url = url
        self.jobs = jobs
        self.storage: BaseStorage = optuna.storages.get_storage(open_storage(url))
        self._objective_cache: dict[str, list[schemas.Objective]] = {}

    # -- helpers -------------------------------------------------------------------------
    def objectives(self, job: Job) -> list[schemas.Objective]:
        if job.id not in self._objective_cache:
            self._objective_cache[job.id] = (self._stored_objectives(job) if job.source == PYTHON_SOURCE
                                             else _objectives(job.spec))
        return self._objective_cache[job.id]

    def _stored_objectives(self, job: Job) -> list[schemas.Objective]:
        """A ``paretoml.search`` study's objectives: its spec names a task this server cannot
        load, so the directions come from the Optuna study itself."""
        study_id = self.study_id(job.id)
        directions = self.storage.get_study_directions(study_id) if study_id is not None else []
        return [schemas.Objective(name=o["name"], direction="maximize" if d == StudyDirection.MAXIMIZE else "minimize")
                for o, d in zip(job.spec.get("objectives", []), directions)]

    def study_id(self, job_id: str) -> int | None:
        try:
            return self.storage.get_study_id_from_name(job_id)
        except KeyError:
            return None

    def trials(self, job_id: str) -> list[FrozenTrial]:
        study_id = self.study_id(job_id)
        if study_id is None:
            return []
        return self.storage.get_all_trials(study_id, deepcopy=False)

    def warm(self, recent: int = 20) -> None:
        """Load the trials of the most recent studies into the cache (first reads of big
        studies take seconds)."""
        try:
            for job in self.jobs.list(offset=0, limit=recent).items:
                self.trials(job.id)
        except Exception:  # only an optimisation: a request will load them instead
            pass

    # -- studies -------------------------------------------------------------------------
    def summary(self, job: Job, trials: list[FrozenTrial] | None = None) -> schemas.StudySummary:
        trials = self.trials(job.id) if trials is None else trials
        objectives = self.objectives(job)
        return schemas.StudySummary(
            id=job.id, status=JobStatus(job.status), task=job.task, sampler=job.sampler, objectives=objectives,
            progress=self._progress(job, trials), best=self._best(objectives, trials),
            created_at=job.created_at, error=job.error, source=job.source,
        )

    def detail(self, job: Job) -> schemas.StudyDetail:
        trials = self.trials(job.id)
        summary = self.summary(job, trials)
        attrs: dict[str, Any] = {}
        study_id = self.study_id(job.id)
        if study_id is not None:
            attrs = self.storage.get_study_user_attrs(study_id)
        history = stored_history(self.url, job.id)
        front = stored_front(self.url, job.id)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        durations = [d for t in complete if (d := _seconds(t.datetime_start, t.datetime_complete)) is not None]
        end = job.finished_at or (datetime.now(timezone.utc) if job.started_at else None)
        timings = schemas.Timings(
            created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
            elapsed_s=_seconds(job.started_at, end),
            mean_trial_s=sum(durations) / len(durations) if durations else None,
        )
        return schemas.StudyDetail(
            **summary.model_dump(), spec=job.spec, timings=timings, runs=job.runs, front_size=len(front),
            hypervolume=history[-1].hypervolume if history else None,
            layers=[schemas.Layer.model_validate(row) for row in attrs.get(LAYERS_ATTR, [])],
            reference=attrs.get(REFERENCE_ATTR, {}),
        )

    def _progress(self, job: Job, trials: list[FrozenTrial]) -> schemas.Progress:
        counts = {state: 0 for state in TrialState}
        for trial in trials:
            counts[trial.state] += 1
        complete = counts[TrialState.COMPLETE]
        return schemas.Progress(budget=job.n_trials, complete=complete, running=counts[TrialState.RUNNING],
                                failed=counts[TrialState.FAIL], pruned=counts[TrialState.PRUNED],
                                waiting=counts[TrialState.WAITING], fraction=min(1.0, complete / job.n_trials))

    @staticmethod
    def _best(objectives: list[schemas.Objective], trials: list[FrozenTrial]) -> list[schemas.BestValue]:
        best: list[schemas.BestValue] = []
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None and is_feasible(t)]
        for i, objective in enumerate(objectives):
            sign = -1.0 if objective.direction == "maximize" else 1.0
            pool = [t for t in done if math.isfinite(t.values[i])]
            if pool:
                winner = min(pool, key=lambda t: (sign * t.values[i], t.number))
                best.append(schemas.BestValue(objective=objective.name, value=winner.values[i],
                                              trial_number=winner.number))
        return best

    # -- trials ---------------------------------------------------------------------------
    def trial(self, job: Job, trial: FrozenTrial) -> schemas.Trial:
        names = [o.name for o in self.objectives(job)]
        attrs = trial.user_attrs
        note = attrs.get(BASELINE_ATTR)
        if note is None and RETRY_OF_ATTR in attrs:
            note = f"retry of trial {attrs[RETRY_OF_ATTR]}"
        if note is None and OPTUNA_RETRY_ATTR in trial.system_attrs:
            note = f"retry of a stale trial (id {trial.system_attrs[OPTUNA_RETRY_ATTR]})"
        return schemas.Trial(
            number=trial.number, state=STATE_NAMES[trial.state], values=self._values(names, trial),
            feasible=is_feasible(trial), constraints=stored_constraints(trial),
            params=dict(trial.params), config=attrs.get(CONFIG_ATTR),
            objectives_how={k: schemas.Provenance(**v) for k, v in attrs.get(PROVENANCE_ATTR, {}).items()},
            note=note, worker=attrs.get(WORKER_ATTR), error=attrs.get(ERROR_ATTR),
            started_at=trial.datetime_start, completed_at=trial.datetime_complete,
            duration_s=_seconds(trial.datetime_start, trial.datetime_complete),
            intermediate_values=dict(sorted(trial.intermediate_values.items())),
            rungs={int(step): values for step, values in sorted(attrs.get(RUNGS_ATTR, {}).items(),
                                                                 key=lambda item: int(item[0]))},
            stopped_at=attrs.get(STOPPED_AT_ATTR),
            rung_unit=attrs.get(RUNG_UNIT_ATTR),
        )

    def brief(self, job: Job, trial: FrozenTrial) -> schemas.TrialBrief:
        names = [o.name for o in self.objectives(job)]
        return schemas.TrialBrief(number=trial.number, state=STATE_NAMES[trial.state],
                                  values=self._values(names, trial), feasible=is_feasible(trial),
                                  duration_s=_seconds(trial.datetime_start, trial.datetime_complete))

    def trial_by_number(self, job: Job, number: int) -> schemas.Trial | None:
        for trial in self.trials(job.id):
            if trial.number == number:
                return self.trial(job, trial)
        return None

    def briefs(self, job: Job, state: TrialState | None = None) -> list[schemas.TrialBrief]:
        """The study's trials (in ``state``, if given) in number order, numbers and values only."""
        trials = [t for t in self.trials(job.id) if state is None or t.state == state]
        return [self.brief(job, t) for t in sorted(trials, key=lambda t: t.number)]

    def importances(self, job: Job) -> Importances:
        """Parameter importances per objective (PED-ANOVA), kept while the study does not move."""
        return study_importances(self, job)

    @staticmethod
    def _values(names: list[str], trial: FrozenTrial) -> dict[str, float] | None:
        if trial.values is None:
            return None
        return {n: v for n, v in zip(names, trial.values) if _finite(v) is not None}

    # -- frontier -------------------------------------------------------------------------
    def frontier(self, job: Job) -> schemas.Frontier:
        objectives = self.objectives(job)
        names = [o.name for o in objectives]
        study_id = self.study_id(job.id)
        reference = self.storage.get_study_user_attrs(study_id).get(REFERENCE_ATTR, {}) if study_id is not None else {}
        directions = [StudyDirection.MAXIMIZE if o.direction == "maximize" else StudyDirection.MINIMIZE
                      for o in objectives]
        point = reference_point(directions, names, reference)
        return schemas.Frontier(
            objectives=objectives,
            points=[schemas.FrontierPoint(trial_number=p.trial_number, values=dict(zip(names, p.values)))
                    for p in stored_front(self.url, job.id)],
            history=[schemas.FrontierSnapshot.model_validate(s) for s in stored_history(self.url, job.id)],
            reference_point=dict(zip(names, point.tolist())) if point is not None else None,
        )

    def delete_study(self, job_id: str) -> None:
        study_id = self.study_id(job_id)
        if study_id is not None:
            self.storage.delete_study(study_id)
        self._objective_cache.pop(job_id, None)
