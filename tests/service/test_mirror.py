"""MirroredStorage against real SQLite files and a real PostgreSQL server."""

import optuna
import pytest
from optuna.trial import TrialState

from paretoml.search_space.trial_attrs import FIXED_PARAMS_ATTR
from paretoml.service.storage import open_durable_storage


def objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", -1, 1)
    n = trial.suggest_int("n", 1, 8, log=True)
    c = trial.suggest_categorical("c", ["a", "b", None])
    trial.set_user_attr("note", {"n": n, "c": c})
    trial.set_user_attr("note", {"n": n, "c": c, "again": True})  # overwritten before the flush
    return x**2 + n, (x - 1) ** 2 + (c == "a")


def run(storage, n: int, name: str = "s") -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, directions=["minimize", "minimize"],
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5), load_if_exists=True)
    for _ in range(n):
        trial = study.ask()
        values = objective(trial)
        storage.flush(trial._trial_id)
        study.tell(trial, values)
    return study


def test_plain_optuna_reads_exactly_what_the_mirror_wrote(storage_url):
    storage = open_durable_storage(storage_url)
    study = run(storage, 25)
    study.enqueue_trial({"x": 0.5})
    study.set_user_attr("who", "test")
    plain = optuna.load_study(study_name="s", storage=storage_url)
    assert plain.user_attrs == {"who": "test"}
    mine, theirs = study.trials, plain.trials
    assert [t.number for t in theirs] == list(range(26))
    for a, b in zip(mine, theirs):
        assert (a.state, a.params, a.values, a.user_attrs, a.distributions) == \
               (b.state, b.params, b.values, b.user_attrs, b.distributions)
        assert a.datetime_complete == b.datetime_complete
    assert theirs[-1].state == TrialState.WAITING and theirs[-1].system_attrs[FIXED_PARAMS_ATTR] == {"x": 0.5}
    assert theirs[3].user_attrs["note"]["again"] is True


def test_a_new_mirror_loads_the_study_and_continues_numbering(storage_url):
    run(open_durable_storage(storage_url), 10)
    study = run(open_durable_storage(storage_url), 5)  # a second process, after the first ended
    numbers = [t.number for t in optuna.load_study(study_name="s", storage=storage_url).trials]
    assert numbers == list(range(15)) and len(study.trials) == 15


def test_a_running_trial_is_durable_with_its_parameters(storage_url):
    storage = open_durable_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    storage.flush(trial._trial_id)
    stored = optuna.load_study(study_name="s", storage=storage_url).trials[0]
    assert stored.state == TrialState.RUNNING and stored.params == trial.params


def test_missing_study_raises_key_error(storage_url):
    with pytest.raises(KeyError):
        open_durable_storage(storage_url).get_study_id_from_name("nope")


def test_a_trial_killed_right_after_ask_still_goes_stale(storage_url):
    """The first heartbeat is written with the trial itself: no window leaves it RUNNING forever."""
    from paretoml.service.storage import open_storage

    storage = open_durable_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name="s")
    study.ask()  # the process "dies" here, before any parameter or explicit heartbeat
    rdb = open_storage(storage_url, heartbeat_interval=1, grace_period=1)
    study_id = rdb.get_study_id_from_name("s")
    import time

    time.sleep(2.5)
    assert len(rdb._get_stale_trial_ids(study_id)) == 1
