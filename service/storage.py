"""Optuna storage for a database URL: plain RDB storage (so any Optuna tool can open the
studies), with trial heartbeats so that trials left RUNNING by a dead process are found
and retried.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

DEFAULT_STORAGE_URL = "sqlite:///paretoml.db"


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
        return RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period or 3 * heartbeat_interval,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
        )
    except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or server
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(f"--storage: cannot open {url!r}: {first}") from None


def study_exists(storage: BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


class Heartbeat:
    """Record a trial's heartbeat every ``interval`` seconds while the block runs."""

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return isinstance(self._storage, BaseHeartbeat) and is_heartbeat_enabled(self._storage)

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            assert isinstance(self._storage, BaseHeartbeat)
            self._storage.record_heartbeat(self._trial_id)
            interval = self._storage.get_heartbeat_interval() or 1
            self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True)
            self._thread.start()
        return self

    def _beat(self, interval: int) -> None:
        assert isinstance(self._storage, BaseHeartbeat)
        while not self._stop.wait(interval):
            self._storage.record_heartbeat(self._trial_id)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def fail_stale_trials(study: optuna.Study) -> None:
    optuna.storages.fail_stale_trials(study)
