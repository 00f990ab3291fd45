"""Optuna's parameter importances of a study, for ``/studies/{id}/importances`` and the dashboard.

The evaluator is PED-ANOVA (``optuna.importance.PedAnovaImportanceEvaluator``, Optuna's
default): it compares the parameter distribution of the top 10 % of completed trials
with that of all of them, with no model to fit, so it stays under a second per objective
at ten thousand trials where fANOVA's random forest takes several. Each objective gets its
own importances (the target is the objective turned into a loss, since PED-ANOVA treats
lower as better), and multi-objective studies get one more set: the importance of
reaching the Pareto front (Optuna's non-domination rank with HSSP tie-breaking).

Results are kept per study and count of completed trials, so polling a study that has
not moved computes nothing.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING

import optuna
from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
from optuna.trial import TrialState
from pydantic import BaseModel, Field

from paretoml.service.api import schemas
from paretoml.service.db.models import Job

if TYPE_CHECKING:
    from paretoml.service.api.reads import StudyReads

__all__ = ["EVALUATOR", "MIN_TRIALS", "Importances", "ObjectiveImportances", "compute_importances", "study_importances"]

EVALUATOR = "PED-ANOVA"
MIN_TRIALS = 4  # fewer completed trials than this give no meaningful top quantile


class ObjectiveImportances(BaseModel):
    objective: str
    direction: str
    importances: dict[str, float] = Field(description="parameter -> importance, summing to 1 (most important first)")


class Importances(BaseModel):
    evaluator: str = Field(description="the Optuna importance evaluator used")
    n_trials: int = Field(description="completed trials the importances are computed from")
    objectives: list[ObjectiveImportances] = Field(description="per objective, in the study's order")
    pareto: dict[str, float] | None = Field(
        None, description="importance for reaching the Pareto front (multi-objective studies only)")
    note: str | None = Field(None, description="why there are no importances yet, if so")


_cache: OrderedDict[tuple[str, str, str, int, int], Importances] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 32


def _sorted(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(values.items(), key=lambda kv: -kv[1]) if math.isfinite(v)}


def compute_importances(study: optuna.Study | None, objectives: list[schemas.Objective],
                        n_complete: int) -> Importances:
    if study is None or n_complete < MIN_TRIALS:
        return Importances(evaluator=EVALUATOR, n_trials=n_complete, objectives=[],
                           note=f"importances need at least {MIN_TRIALS} completed trials ({n_complete} so far)")
    out: list[ObjectiveImportances] = []
    pareto = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "computes the importances of params to achieve low target", etc.
        for i, objective in enumerate(objectives):
            sign = -1.0 if objective.direction == "maximize" else 1.0
            values = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(),
                                           target=lambda t, i=i, sign=sign: sign * t.values[i])
            out.append(ObjectiveImportances(objective=objective.name, direction=objective.direction,
                                            importances=_sorted(values)))
        if len(objectives) > 1:
            pareto = _sorted(get_param_importances(study, evaluator=PedAnovaImportanceEvaluator()))
    return Importances(evaluator=EVALUATOR, n_trials=n_complete, objectives=out, pareto=pareto)


def study_importances(reads: StudyReads, job: Job) -> Importances:
    """Parameter importances per objective (PED-ANOVA over the completed trials), kept per
    study and count of completed trials."""
    objectives = reads.objectives(job)
    trials = reads.trials(job.id)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete or reads.study_id(job.id) is None:
        return compute_importances(None, objectives, 0)
    key = (reads.url, job.id, str(job.created_at), len(complete), max(t.number for t in complete))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    study = optuna.load_study(study_name=job.id, storage=reads.storage)
    result = compute_importances(study, objectives, len(complete))
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return result
