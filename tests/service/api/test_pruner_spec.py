"""Bad pruners over the REST API: a 422 naming ``pruner``, and nothing stored."""

from __future__ import annotations

import json

import pytest

from tests.service.api.conftest import synthetic_spec, wait_for

API = "/api/v1"


@pytest.mark.parametrize(("pruner", "words"), [
    ({"name": "asha"}, "unknown pruner 'asha'; available: hyperband, median, none, successive-halving, wilcoxon"),
    ({"name": "hyperband", "options": {"eta": 3}}, "pruner 'hyperband' has no option 'eta'"),
    ({"name": "median", "options": {"n_startup_trials": -1}}, "option 'n_startup_trials'"),
    ({"name": "wilcoxon"}, "single-objective only"),
    ({"name": "median"}, "the rungs are points of fine-tuning"),  # the spec has no fine-tuning
    ({"name": "median", "over": "epochs"}, "Input should be 'finetune' or 'evaluation'"),  # at pruner.over
])
def test_a_bad_pruner_is_422_naming_it_and_stores_nothing(client, pruner, words):
    response = client.post(f"{API}/studies", json=synthetic_spec(pruner=pruner))
    assert response.status_code == 422
    errors = response.json()["detail"]
    match = [e for e in errors if e["loc"][:2] == ["body", "pruner"]]
    assert match and words in match[0]["msg"], errors
    assert client.get(f"{API}/studies").json()["total"] == 0


@pytest.mark.slow
def test_pruned_trials_are_documented_with_their_curve(running_client):
    """A digits-cnn study with a searched fine-tune LR, run by the API's scheduler on Ray:
    the trial documents of stopped trials say so and carry the rungs they passed."""
    client = running_client
    spec = synthetic_spec(
        task="digits-cnn",
        knobs=[{"kind": "bitwidth", "choices": [4, 8]},
               {"kind": "learning_rate", "base_lr": 1e-3, "base_lr_range": [1e-4, 3.0]}],
        objectives=[{"name": "accuracy"}, {"name": "model_bytes"}],
        sampler={"name": "random"}, finetune={"steps": 24}, n_trials=10, seed=4,
        pruner={"name": "successive-halving", "options": {"min_trials": 3}})
    response = client.post(f"{API}/studies", json=spec)
    assert response.status_code in (200, 201, 202), response.text
    study = response.json()["id"]
    detail = wait_for(client, study, {"completed", "failed"}, timeout=240)
    assert detail["status"] == "completed", detail["error"]
    assert detail["progress"]["pruned"] > 0
    items = client.get(f"{API}/studies/{study}/trials", params={"limit": 50}).json()["items"]
    pruned = [t for t in items if t["state"] == "pruned"]
    complete = [t for t in items if t["state"] == "complete"]
    assert pruned and complete
    for brief in pruned:
        doc = client.get(f"{API}/studies/{study}/trials/{brief['number']}").json()
        assert doc["values"] is None and doc["stopped_at"] in (6, 12)
        assert max(int(s) for s in doc["intermediate_values"]) == doc["stopped_at"]
        assert set(doc["rungs"][str(doc["stopped_at"])]) == {"accuracy", "model_bytes"}
    doc = client.get(f"{API}/studies/{study}/trials/{complete[0]['number']}").json()
    assert [int(s) for s in doc["intermediate_values"]] == [6, 12, 24] and doc["stopped_at"] is None
    assert doc["rung_unit"] == "fine-tune step"
    front = {p["trial_number"] for p in client.get(f"{API}/studies/{study}/frontier").json()["points"]}
    assert front and not front & {t["number"] for t in pruned}


def test_the_schema_refuses_the_rungs_the_server_refuses(client):
    """What the OpenAPI document allows for ``pruner.rungs`` the server takes, except the order
    (which JSON Schema cannot state; the description says it)."""
    import jsonschema

    document = client.get("/openapi.json").json()
    rungs = document["components"]["schemas"]["PrunerSpec"]["properties"]["rungs"]
    assert rungs["minItems"] == 1 and rungs["uniqueItems"] is True
    validator = jsonschema.Draft202012Validator(rungs)
    for bad in ([], [2.0], [0.0], [1.0], [0.25, 0.25], [-0.5]):
        assert not validator.is_valid(bad), bad
        response = client.post("/api/v1/specs/validate", json={"format": "json", "text": json.dumps(
            synthetic_spec(pruner={"name": "median", "rungs": bad}))})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"][:4] == ["body", "spec", "pruner", "rungs"]
    assert validator.is_valid([0.25, 0.5])
    assert "increasing" in rungs["description"]


def test_yaml_text_sent_as_json_is_the_documented_422_at_text(client):
    operation = client.get("/openapi.json").json()["paths"]["/api/v1/specs/validate"]["post"]
    assert "YAML text sent as `json`" in operation["responses"]["422"]["description"]
    response = client.post("/api/v1/specs/validate", json={"format": "json", "text": "task: digits-cnn\n"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "text"]
