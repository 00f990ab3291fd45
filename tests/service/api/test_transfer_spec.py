"""A spec naming sources the sampler cannot learn from is refused at submission (422 naming
``sampler.options.transfer_from``); nothing is queued."""

from __future__ import annotations

import optuna

from paretoml.service.spec import parse_spec
from paretoml.service.executors.inprocess import InProcessExecutor
from paretoml.service.runner import StudyRunner
from tests.service.api.conftest import synthetic_spec

API = "/api/v1"


def xgboost_with(sources: list[str]) -> dict:
    return synthetic_spec(sampler={"name": "xgboost", "options": {"transfer_from": sources}})


def test_sources_missing_or_measuring_other_objectives_are_422(client, tmp_path):
    source = parse_spec(synthetic_spec(objectives=[{"name": "fidelity"}, {"name": "latency_ms"}], n_trials=2,
                                       sampler={"name": "random"}))
    with InProcessExecutor(source) as executor:  # a real stored study in the API's database
        StudyRunner.create(source, optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'api.db'}"), "lat",
                           executor).run()
    for sources, words in [(["nowhere"], "no study named 'nowhere'"), (["lat"], "measures different objectives")]:
        response = client.post(f"{API}/studies", json=xgboost_with(sources))
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "sampler", "options", "transfer_from"] and words in detail["msg"]
    assert client.get(f"{API}/studies").json()["total"] == 0
    fine = synthetic_spec(objectives=[{"name": "fidelity"}, {"name": "latency_ms"}],
                          sampler={"name": "xgboost", "options": {"transfer_from": ["lat"]}})
    assert client.post(f"{API}/studies", json=fine).status_code == 202
