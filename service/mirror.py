"""MirroredStorage: Optuna storage that reads from memory and writes through to SQL.

Optuna's RDBStorage pays a transaction for every parameter and attribute and re-reads the
study for every suggestion; on SQLite that costs about 200 ms a trial at a few hundred
trials. One runner owns a study, so its own view of the trials can live in memory: the
samplers read an ``InMemoryStorage``, and every change is written through to the RDB
tables, batched into three transactions per trial:

1. the trial is created (as Optuna would, so trial numbers match);
2. ``flush(trial_id)`` after the runner has drawn its parameters: a process killed while
   the trial runs leaves a RUNNING trial with its parameters, which is retried on resume;
3. the trial finishes: values, state and every attribute set meanwhile, in one commit.

A trial is complete in SQL before the runner moves on, so a kill loses no completed trial.
The tables are Optuna's own: ``optuna.load_study`` on the URL opens the study as usual.

Limits: one process writes a study through a mirror at a time (the runner that owns it);
other processes may read the database at any time.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from paretoml.surrogates.optuna_compat import (
    BaseHeartbeat,
    FrozenStudy,
    create_scoped_session,
    stale_trial_ids,
    trial_id,
)
from paretoml.surrogates.optuna_compat import rdb_models as models


@dataclass
class _Pending:
    params: dict[str, tuple[float, BaseDistribution]] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.params or self.user_attrs or self.system_attrs)


class MirroredStorage(BaseStorage, BaseHeartbeat):
    """In-memory reads, batched write-through to an :class:`~optuna.storages.RDBStorage`."""

    def __init__(self, rdb: RDBStorage) -> None:
        self.rdb = rdb
        self.memory = InMemoryStorage()
        self._lock = threading.RLock()
        self._study_ids: dict[int, int] = {}  # memory study id -> rdb study id
        self._trial_ids: dict[int, int] = {}  # memory trial id -> rdb trial id
        self._pending: dict[int, _Pending] = {}

    # -- studies ---------------------------------------------------------------------------
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        with self._lock:
            rdb_id = self.rdb.create_new_study(directions, study_name)
            name = self.rdb.get_study_name_from_id(rdb_id)
            mem_id = self.memory.create_new_study(directions, name)
            self._study_ids[mem_id] = rdb_id
            return mem_id

    def delete_study(self, study_id: int) -> None:
        with self._lock:
            self.rdb.delete_study(self._study_ids.pop(study_id))
            self.memory.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.rdb.set_study_user_attr(self._study_ids[study_id], key, value)
        self.memory.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.rdb.set_study_system_attr(self._study_ids[study_id], key, value)
        self.memory.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        with self._lock:
            try:
                return self.memory.get_study_id_from_name(study_name)
            except KeyError:
                return self._load_study(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.memory.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self.memory.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.memory.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self.memory.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self.rdb.get_all_studies()

    def _load_study(self, study_name: str) -> int:
        """Copy a stored study and its trials into memory (raises KeyError if absent)."""
        rdb_id = self.rdb.get_study_id_from_name(study_name)
        mem_id = self.memory.create_new_study(self.rdb.get_study_directions(rdb_id), study_name)
        for key, value in self.rdb.get_study_user_attrs(rdb_id).items():
            self.memory.set_study_user_attr(mem_id, key, value)
        for key, value in self.rdb.get_study_system_attrs(rdb_id).items():
            self.memory.set_study_system_attr(mem_id, key, value)
        for trial in sorted(self.rdb.get_all_trials(rdb_id, deepcopy=False), key=lambda t: t.number):
            mem_trial = self.memory.create_new_trial(mem_id, template_trial=trial)
            self._trial_ids[mem_trial] = trial_id(trial)
        self._study_ids[mem_id] = rdb_id
        return mem_id

    # -- trials ----------------------------------------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        """Create in memory, then insert the same trial (number included) in one transaction."""
        with self._lock:
            mem_id = self.memory.create_new_trial(study_id, template_trial)
            trial = self.memory.get_trial(mem_id)
            pending = _Pending(
                params={n: (trial.distributions[n].to_internal_repr(v), trial.distributions[n])
                        for n, v in trial.params.items()},
                user_attrs=trial.user_attrs,
                system_attrs=trial.system_attrs,
            )
            trials = models.TrialModel.__table__
            with create_scoped_session(self.rdb.scoped_session) as session:
                result = session.execute(sqlalchemy.insert(trials).values(
                    number=trial.number, study_id=self._study_ids[study_id], state=trial.state,
                    datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete,
                ))
                rdb_id = int(result.inserted_primary_key[0])
                self._insert(session, rdb_id, pending, trial.values)
                if trial.state == TrialState.RUNNING and self.rdb.heartbeat_interval is not None:
                    # a first beat in the same commit: a process killed at any later point
                    # leaves a trial that goes stale and is retried, never one stuck RUNNING
                    session.execute(sqlalchemy.insert(models.TrialHeartbeatModel.__table__).values(
                        trial_id=rdb_id, heartbeat=sqlalchemy.func.now()))
                if trial.intermediate_values:
                    table = models.TrialIntermediateValueModel.__table__
                    rows = []
                    for step, v in trial.intermediate_values.items():
                        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(v)
                        rows.append({"trial_id": rdb_id, "step": step, "intermediate_value": stored,
                                     "intermediate_value_type": kind})
                    session.execute(sqlalchemy.insert(table), rows)
            self._trial_ids[mem_id] = rdb_id
            return mem_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self.memory.set_trial_param(trial_id, param_name, param_value_internal, distribution)
        self._pending.setdefault(trial_id, _Pending()).params[param_name] = (param_value_internal, distribution)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.memory.set_trial_user_attr(trial_id, key, value)
        self._pending.setdefault(trial_id, _Pending()).user_attrs[key] = copy.deepcopy(value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.memory.set_trial_system_attr(trial_id, key, value)
        self._pending.setdefault(trial_id, _Pending()).system_attrs[key] = copy.deepcopy(value)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self.memory.set_trial_intermediate_value(trial_id, step, intermediate_value)
        self.rdb.set_trial_intermediate_value(self._trial_ids[trial_id], step, intermediate_value)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        with self._lock:
            if not self.memory.set_trial_state_values(trial_id, state, values):
                return False
            if state == TrialState.RUNNING:  # a queued trial taken by this runner
                self.flush(trial_id)
                taken = self.rdb.set_trial_state_values(self._trial_ids[trial_id], state, values)
                if taken and self.rdb.heartbeat_interval is not None:
                    self.rdb.record_heartbeat(self._trial_ids[trial_id])
                return taken
            self._write(trial_id, state, values)
            return True

    def flush(self, trial_id: int) -> None:
        """Write the trial's pending parameters and attributes in one transaction."""
        if self._pending.get(trial_id):
            self._write(trial_id, None, None)

    def _write(self, trial_id: int, state: TrialState | None, values: Sequence[float] | None) -> None:
        pending = self._pending.pop(trial_id, _Pending())
        rdb_id = self._trial_ids[trial_id]
        with create_scoped_session(self.rdb.scoped_session) as session:
            self._insert(session, rdb_id, pending, values)
            if state is not None:
                trials = models.TrialModel.__table__
                session.execute(
                    sqlalchemy.update(trials)
                    .where(trials.c.trial_id == rdb_id)
                    .values(state=state, datetime_complete=self.memory.get_trial(trial_id).datetime_complete)
                )

    @staticmethod
    def _insert(session: Any, rdb_id: int, pending: _Pending, values: Sequence[float] | None) -> None:
        """Bulk statements for one trial; validity was already checked by the memory storage."""
        if pending.params:
            session.execute(sqlalchemy.insert(models.TrialParamModel.__table__), [
                {"trial_id": rdb_id, "param_name": name, "param_value": value,
                 "distribution_json": distribution_to_json(dist)}
                for name, (value, dist) in pending.params.items()
            ])
        for model, attrs in ((models.TrialUserAttributeModel, pending.user_attrs),
                             (models.TrialSystemAttributeModel, pending.system_attrs)):
            if not attrs:
                continue
            table = model.__table__
            session.execute(sqlalchemy.delete(table).where(table.c.trial_id == rdb_id, table.c.key.in_(list(attrs))))
            session.execute(sqlalchemy.insert(table), [
                {"trial_id": rdb_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()
            ])
        if values:
            rows = []
            for objective, v in enumerate(values):
                stored, kind = models.TrialValueModel.value_to_stored_repr(v)
                rows.append({"trial_id": rdb_id, "objective": objective, "value": stored, "value_type": kind})
            session.execute(sqlalchemy.insert(models.TrialValueModel.__table__), rows)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self.memory.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self.memory.get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self.memory.get_all_trials(study_id, deepcopy=deepcopy, states=states)

    # -- heartbeats ------------------------------------------------------------------------
    def record_heartbeat(self, trial_id: int) -> None:
        self.rdb.record_heartbeat(self._trial_ids[trial_id])

    def record_heartbeats(self, trial_ids: Sequence[int]) -> None:
        """Beat for several running trials in one transaction."""
        if not trial_ids:
            return
        with create_scoped_session(self.rdb.scoped_session, True) as session:
            now = session.execute(sqlalchemy.func.now()).scalar()
            for trial_id in trial_ids:
                rdb_id = self._trial_ids[trial_id]
                beat = models.TrialHeartbeatModel.where_trial_id(rdb_id, session, True)
                if beat is None:
                    session.add(models.TrialHeartbeatModel(trial_id=rdb_id))
                else:
                    beat.heartbeat = now

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = set(stale_trial_ids(self.rdb, self._study_ids[study_id]))
        return [mem for mem, rdb in self._trial_ids.items() if rdb in stale]

    def get_heartbeat_interval(self) -> int | None:
        return self.rdb.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.rdb.get_heartbeat_stale_trial_callback()
