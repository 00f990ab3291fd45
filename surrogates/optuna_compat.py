"""Every use of Optuna's private API, in one place, so an Optuna upgrade breaks one file.

ParetoML is tested with the Optuna that ``pyproject.toml`` names as its lower bound and
up; ``tests/surrogates/test_optuna_compat.py`` exercises each name here against the
installed Optuna, so a change in it fails there first. Nothing else imports a private
Optuna module or reads a private attribute.

Why each is needed:

* the runner asks and tells trials itself (asynchronously, in a pool), so it writes
  intermediate values and flushes through the study's storage by the trial's id;
* the mirrored storage (``service/mirror.py``) writes Optuna's own RDB tables in batches,
  and is a heartbeat storage, like Optuna's RDBStorage;
* the zeroth-order sampler tags the trial it samples (system attributes) before it runs;
* a stored trial's parameters are checked against a changed search space.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages._rdb import models as rdb_models
from optuna.storages._rdb.storage import _create_scoped_session as create_scoped_session
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial

__all__ = ["BaseHeartbeat", "FrozenStudy", "contains", "create_scoped_session", "heartbeat_enabled",
           "rdb_models", "stale_trial_ids", "storage_backend", "study_storage", "trial_id"]


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes through (Optuna's cached wrapper included)."""
    return study._storage


def storage_backend(storage: BaseStorage) -> BaseStorage:
    """The storage under Optuna's cache wrapper (``_CachedStorage``), else ``storage`` itself;
    our mirror's RDB side is its ``rdb``."""
    return getattr(storage, "rdb", None) or getattr(storage, "_backend", None) or storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its number)."""
    return trial._trial_id


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether the external ``value`` lies in ``dist``."""
    return bool(dist._contains(dist.to_internal_repr(value)))


def heartbeat_enabled(storage: BaseStorage) -> bool:
    return isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)


def stale_trial_ids(storage: BaseHeartbeat, study_id: int) -> list[int]:
    """Running trials of the study whose heartbeat is older than the grace period."""
    return list(storage._get_stale_trial_ids(study_id))

