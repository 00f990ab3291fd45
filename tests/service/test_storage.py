"""Stale trials (their process died) fail saying why, and their retries start clean."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from paretoml.search_space.trial_attrs import CONFIG_ATTR, ERROR_ATTR, OPTUNA_RETRY_ATTR
from paretoml.service.runner import INTERRUPTED_STALE
from paretoml.service.storage import fail_stale_trials, open_durable_storage, open_storage


@pytest.mark.parametrize("mirrored", [False, True], ids=["rdb", "mirrored"])
def test_a_stale_trial_fails_with_its_reason_stored_and_its_retry_does_not_inherit_it(tmp_path, mirrored):
    url = f"sqlite:///{tmp_path / 'stale.db'}"
    storage = (open_durable_storage if mirrored else open_storage)(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage)
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    dead.set_user_attr(CONFIG_ATTR, {"x": dead.params["x"]})
    getattr(storage, "flush", lambda _: None)(dead._trial_id)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)  # no beat for longer than the grace period: its process is taken for dead

    assert fail_stale_trials(study, {ERROR_ATTR: INTERRUPTED_STALE}) == [dead._trial_id]

    stored = optuna.load_study(study_name="s", storage=url).trials  # read back from the database
    assert stored[0].state == TrialState.FAIL
    assert stored[0].user_attrs[ERROR_ATTR] == INTERRUPTED_STALE
    retry = stored[1]
    assert retry.state == TrialState.WAITING and retry.system_attrs[OPTUNA_RETRY_ATTR] == 0
    assert ERROR_ATTR not in retry.user_attrs and retry.user_attrs[CONFIG_ATTR] == {"x": dead.params["x"]}
    assert fail_stale_trials(study, {ERROR_ATTR: INTERRUPTED_STALE}) == []  # once only
