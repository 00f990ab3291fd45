"""Bad pruners over the REST API: a 422 naming ``pruner``, and nothing stored."""

from __future__ import annotations

import pytest

from tests.service.api.conftest import synthetic_spec

API = "/api/v1"


@pytest.mark.parametrize(("pruner", "words"), [
    ({"name": "asha"}, "unknown pruner 'asha'; available: hyperband, median, none, successive-halving, wilcoxon"),
    ({"name": "hyperband", "options": {"eta": 3}}, "pruner 'hyperband' has no option 'eta'"),
    ({"name": "median", "options": {"n_startup_trials": -1}}, "option 'n_startup_trials'"),
    ({"name": "wilcoxon"}, "single-objective only"),
    ({"name": "median"}, "the rungs are points of fine-tuning"),  # the spec has no fine-tuning
])
def test_a_bad_pruner_is_422_naming_it_and_stores_nothing(client, pruner, words):
    response = client.post(f"{API}/studies", json=synthetic_spec(pruner=pruner))
    assert response.status_code == 422
    errors = response.json()["detail"]
    match = [e for e in errors if e["loc"][:2] == ["body", "pruner"]]
    assert match and words in match[0]["msg"], errors
    assert client.get(f"{API}/studies").json()["total"] == 0
