"""The stored Pareto front of each study, refreshed as trials complete.

The front (feasible completed trials that no other dominates) is kept in memory and
written to ``paretoml_frontier_points`` only when it changes, with a snapshot row holding
its size and hypervolume, so the API can serve the front and its history without
re-reading every trial.

Hypervolume is computed on objectives turned into losses (maximised ones negated) against
a fixed reference point, so values are comparable over a study's life: 0 for maximised
objectives (accuracy, fidelity) and twice the uncompressed model's value for minimised
ones (bytes, latency, memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import delete, select

from paretoml.search_space.trial_attrs import LEGACY_CONSTRAINTS_ATTR
from paretoml.service.db.models import FrontierPoint, FrontierSnapshot
from paretoml.service.db.session import session_factory
from paretoml.surrogates.pareto import dominates, hypervolume, loss_signs


def reference_point(directions: Sequence[StudyDirection], names: Sequence[str],
                    reference: dict[str, Any]) -> np.ndarray | None:
    point = []
    for direction, name in zip(directions, names):
        if direction == StudyDirection.MAXIMIZE:
            point.append(0.0)
        elif isinstance(reference.get(name), (int, float)) and reference[name] > 0:
            point.append(2.0 * float(reference[name]))
        else:
            return None
    return np.asarray(point)


def stored_constraints(trial: FrozenTrial) -> list[float]:
    """The trial's constraint values as Optuna reads them (``trial.constraints``: the runner
    sets them with ``Trial.set_constraint``); a study stored before that kept them only as a
    user attribute list, read as the fallback."""
    values = trial.constraints
    if values:
        return [float(v) for v in values.values()]
    return [float(v) for v in trial.user_attrs.get(LEGACY_CONSTRAINTS_ATTR, [])]


def is_feasible(trial: FrozenTrial) -> bool:
    """Every constraint value <= 0 (Optuna's rule); no constraints means feasible."""
    return all(c <= 0 for c in stored_constraints(trial))


class FrontierRecorder:
    """An ``on_trial`` callback of the runner: keeps the stored front current."""

    def __init__(self, url: str, study: optuna.Study, names: Sequence[str], reference: dict[str, Any]) -> None:
        self._sessions = session_factory(url)
        self._study_name = study.study_name
        self._signs = loss_signs(study.directions)
        self._reference = reference_point(study.directions, names, reference)
        self._front: dict[int, np.ndarray] = {}
        self._n_complete = 0
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self._n_complete += 1
            self._offer(trial)
        self._store(last_trial=-1, snapshot=False)

    def _offer(self, trial: FrozenTrial) -> bool:
        if not is_feasible(trial) or trial.values is None:
            return False
        loss = self._signs * np.asarray(trial.values, dtype=float)
        if any(dominates(other, loss) for other in self._front.values()):
            return False  # equal points are all kept, as in Optuna's best_trials
        self._front = {n: v for n, v in self._front.items() if not dominates(loss, v)}
        self._front[trial.number] = loss
        return True

    def hypervolume(self) -> float | None:
        if self._reference is None or not self._front:
            return None
        return hypervolume(np.stack(list(self._front.values())), self._reference)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE:
            return
        self._n_complete += 1
        if self._offer(trial):
            self._store(last_trial=trial.number, snapshot=True)

    def _store(self, last_trial: int, snapshot: bool) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(FrontierPoint).where(FrontierPoint.study_name == self._study_name))
            session.add_all(
                FrontierPoint(study_name=self._study_name, trial_number=n, values=(self._signs * v).tolist())
                for n, v in sorted(self._front.items())
            )
            if snapshot:
                session.add(FrontierSnapshot(study_name=self._study_name, n_complete=self._n_complete,
                                             trial_number=last_trial, front_size=len(self._front),
                                             hypervolume=self.hypervolume()))


def stored_front(url: str, study_name: str) -> list[FrontierPoint]:
    with session_factory(url)() as session:
        rows = session.scalars(select(FrontierPoint).where(FrontierPoint.study_name == study_name)
                               .order_by(FrontierPoint.trial_number))
        return list(rows)


def stored_history(url: str, study_name: str) -> list[FrontierSnapshot]:
    with session_factory(url)() as session:
        rows = session.scalars(select(FrontierSnapshot).where(FrontierSnapshot.study_name == study_name)
                               .order_by(FrontierSnapshot.id))
        return list(rows)
