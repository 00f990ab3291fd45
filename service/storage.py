"""Optuna storage for a database URL: plain RDB storage (so any Optuna tool can open the
studies), with trial heartbeats so that trials left RUNNING by a dead process are found
and retried.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from paretoml.service.db.migrate import schema_lock
from paretoml.service.db.session import tune_sqlite
from paretoml.service.mirror import MirroredStorage
from paretoml.surrogates.optuna_compat import BaseHeartbeat, stale_trial_ids, study_storage

DEFAULT_STORAGE_URL = "sqlite:///paretoml.db"



@contextmanager
def heartbeat_warnings_silenced() -> Iterator[None]:
    """Optuna's warnings about the heartbeats this package uses on purpose, which a user can
    do nothing about: the heartbeat arguments are "experimental" (on every storage made),
    and heartbeats are "supposed to be used with Study.optimize" (on every ask; the runner
    beats for its trials itself). Only these are silenced, only where they are raised."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Argument ``(heartbeat_interval|grace_period|"
                                r"heartbeat_stale_trial_callback)`` is an experimental feature"
                                r"|\S*(RetryHeartbeatStaleTrialCallback|fail_stale_trials) is experimental",
                                category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


class StorageError(ValueError):
    pass


def open_storage(
    url: str = DEFAULT_STORAGE_URL,
    *,
    heartbeat_interval: int = 2,
    grace_period: int | None = None,
    max_retry: int = 3,
) -> BaseStorage:
    """Open (creating tables where needed) the storage at ``url``.

    A RUNNING trial whose heartbeat is older than ``grace_period`` seconds is failed and
    re-queued with the same parameters, at most ``max_retry`` times.
    """
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        parent = Path(url.removeprefix("sqlite:///")).expanduser().resolve().parent
        if not parent.is_dir():
            raise StorageError(f"--storage: directory {parent} does not exist")
    try:
        with schema_lock(url), heartbeat_warnings_silenced():  # Optuna creates its tables here; another process may be too
            storage = RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period or 3 * heartbeat_interval,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
            )
    except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or server
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(f"--storage: cannot open {url!r}: {first}") from None
    if url.startswith("sqlite"):
        tune_sqlite(storage.engine)
    return storage


def open_durable_storage(url: str = DEFAULT_STORAGE_URL, **kwargs: int) -> MirroredStorage:
    """What runners write through: in-memory reads, batched durable writes (see mirror)."""
    return MirroredStorage(open_storage(url, **kwargs))  # type: ignore[arg-type]


def study_exists(storage: BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def fail_stale_trials(study: optuna.Study, reason: Mapping[str, Any] | None = None) -> list[int]:
    """Fail the trials whose process died (no heartbeat for the grace period) and hand each
    to the storage's stale-trial callback (the retry), as ``optuna.storages.fail_stale_trials``
    does; returns their ids.

    ``reason`` (user attributes: why the trial failed) is stored on each before it is failed,
    in the same write, since a finished trial cannot be changed; its retry does not inherit it
    (the retry has not failed). Optuna's private API is reached through ``optuna_compat``."""
    storage = study_storage(study)
    if not isinstance(storage, BaseHeartbeat) or storage.get_heartbeat_interval() is None:
        return []
    failed = []
    with heartbeat_warnings_silenced():
        stale = stale_trial_ids(storage, storage.get_study_id_from_name(study.study_name))
    for trial_id in stale:
        try:
            for key, value in (reason or {}).items():
                storage.set_trial_user_attr(trial_id, key, value)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:  # another process failed or finished it
            pass
    retry = storage.get_heartbeat_stale_trial_callback()
    if retry is not None:
        for trial_id in failed:
            trial = copy.deepcopy(storage.get_trial(trial_id))
            trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in (reason or {})}
            with heartbeat_warnings_silenced():
                retry(study, trial)
    return failed
