"""The studies of one storage, as ``paretoml studies`` lists them: every Optuna study in the
database, whoever made it (``paretoml run``, the server, ``paretoml.search`` or plain Optuna)."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from paretoml.objectives.tasks.python_model import PYTHON_MODEL_TASK
from paretoml.search_space.trial_attrs import SPEC_ATTR


@dataclass(frozen=True)
class StudyRow:
    name: str
    #: "task digits-cnn", "paretoml.search" or "Optuna" (no paretoml spec stored)
    made_by: str
    done: int
    budget: int | None
    objectives: list[str]
    started: str | None


def made_by(spec: dict | None) -> str:
    if spec is None:
        return "Optuna"
    task = spec.get("task")
    return "paretoml.search" if task == PYTHON_MODEL_TASK else f"task {task}"


def list_studies(storage: BaseStorage) -> list[StudyRow]:
    """One row per study, oldest first."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        spec = summary.user_attrs.get(SPEC_ATTR)
        study_id = storage.get_study_id_from_name(summary.study_name)
        done = len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        names = ([o["name"] for o in spec.get("objectives", [])] if spec else
                 storage.get_study_system_attrs(study_id).get("study:metric_names")
                 or [d.name.lower() for d in summary.directions])
        start = summary.datetime_start
        rows.append(StudyRow(summary.study_name, made_by(spec), done, spec.get("n_trials") if spec else None,
                             list(names), start.strftime("%Y-%m-%d %H:%M") if start else None))
    return sorted(rows, key=lambda r: (r.started or "", r.name))
