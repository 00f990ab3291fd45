"""The dashboard's routes in the API's app: pages, plotly.js, examples, figures and the
importances endpoint, on a real study made by ``paretoml run`` (no browser, no Ray)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import plotly
import pytest
from fastapi.testclient import TestClient

from paretoml.service.api import create_app
from paretoml.service.cli import main as cli
from paretoml.service.settings import Settings

STUDY = "dash-3obj"
SPEC = """\
task: synthetic
knobs:
  - kind: bitwidth
    choices: [2, 4, 8, 16]
  - kind: prune
    method: structured
    high: 0.75
    step: 0.25
objectives:
  - name: fidelity
  - name: model_bytes
  - name: latency_ms
constraints:
  - kind: model_bytes
    max_bytes: 1200
measure: {latency_warmup: 0, latency_repeats: 2}
sampler: {name: random}
n_trials: 24
"""


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("dashboard")
    spec = folder / "spec.yaml"
    spec.write_text(SPEC)
    url = f"sqlite:///{folder / 'studies.db'}"
    assert cli(["run", str(spec), "--storage", url, "--study-name", STUDY, "--quiet"]) == 0
    return url


def _client(url: str, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(database_url=url, study_concurrency=0, **settings)),
                      raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(database: str) -> Iterator[TestClient]:
    with _client(database) as c:
        yield c


@pytest.mark.parametrize("path, script", [("/", "list.js"), ("/new", "new.js"), (f"/studies/{STUDY}", "study.js"),
                                          (f"/studies/{STUDY}/trials/3", "trial-page.js")])
def test_pages_are_served_with_their_values_filled_in(client, path, script):
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "{{" not in page
    assert f"/ui/static/{script}?v=" in page
    assert '<meta name="paretoml-auth" content="none">' in page
    assert "cdn" not in page.lower()  # everything from this server
    if "study" in script or "trial" in script:
        assert f'src="/ui/plotly-{plotly.__version__}.min.js"' in page
        assert f'data-study="{STUDY}"' in page


def test_page_path_rejects_odd_study_ids(client):
    assert client.get("/studies/<script>").status_code in (404, 422)


def test_static_files_and_plotly_from_the_installed_package(client):
    css = client.get("/ui/static/app.css")
    assert css.status_code == 200 and css.headers["cache-control"] == "no-cache" and "etag" in css.headers
    js = client.get(f"/ui/plotly-{plotly.__version__}.min.js", headers={"Accept-Encoding": "gzip"})
    assert js.status_code == 200 and "immutable" in js.headers["cache-control"]
    original = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    assert js.content == original  # the client undid the gzip
    assert js.headers["content-encoding"] == "gzip"
    raw = client.get(f"/ui/plotly-{plotly.__version__}.min.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers and raw.content == original
    assert gzip.decompress(gzip.compress(original)) == original


def test_examples_are_the_specs_of_studies_folder(client):
    examples = client.get("/ui/api/examples").json()
    names = [e["name"] for e in examples]
    assert "digits_cnn.yaml" in names
    for example in examples:  # every example is a valid spec for this server
        check = client.post("/api/v1/specs/validate", json={"text": example["text"], "format": "yaml"})
        assert check.status_code == 200, (example["name"], check.json())


def test_study_figures_match_the_rest_documents(client):
    figures = client.get(f"/ui/api/studies/{STUDY}/figures").json()
    frontier = client.get(f"/api/v1/studies/{STUDY}/frontier").json()
    trials = client.get(f"/api/v1/studies/{STUDY}/trials?brief=true&limit=1000").json()["items"]
    pareto = figures["pareto"]
    roles = {t["meta"]["role"]: t for t in pareto["data"]}
    assert {t["type"] for t in pareto["data"]} == {"scatter3d"}  # three objectives
    assert roles["pareto"]["meta"]["count"] == len(frontier["points"]) == figures["front_size"] > 0
    complete = [t for t in trials if t["state"] == "complete"]
    assert sum(t["meta"]["count"] for t in pareto["data"]) == len(complete) == figures["n_complete"]
    assert roles.get("infeasible", {"meta": {"count": 0}})["meta"]["count"] == sum(not t["feasible"] for t in complete)
    assert figures["history"]["data"][0]["meta"]["role"] == "hypervolume"

    flat = client.get(f"/ui/api/studies/{STUDY}/figures?include=pareto&axes=model_bytes,fidelity").json()
    assert set(flat) == {"pareto", "n_complete", "front_size"}
    assert {t["type"] for t in flat["pareto"]["data"]} == {"scattergl"}
    assert flat["pareto"]["layout"]["meta"]["axes"] == ["model_bytes", "fidelity"]
    # a second request of a settled study comes from the cache, and is the same
    assert client.get(f"/ui/api/studies/{STUDY}/figures").json() == figures


def test_figure_errors(client):
    bad_axes = client.get(f"/ui/api/studies/{STUDY}/figures?axes=fidelity,accuracy")
    assert bad_axes.status_code == 422 and "not objectives" in bad_axes.json()["detail"]
    assert client.get(f"/ui/api/studies/{STUDY}/figures?include=everything").status_code == 422
    assert client.get("/ui/api/studies/no-such-study/figures").status_code == 404
    assert client.get(f"/ui/api/studies/{STUDY}/trials/99999/figures/layers").status_code == 404


def test_layer_figure_of_a_trial(client):
    trial = client.get(f"/api/v1/studies/{STUDY}/trials/5").json()
    layers = client.get(f"/api/v1/studies/{STUDY}").json()["layers"]
    figure = client.get(f"/ui/api/studies/{STUDY}/trials/5/figures/layers").json()["layers"]
    bits = next(t for t in figure["data"] if t["meta"]["role"] == "bits")
    assert bits["x"] == [layer["name"] for layer in layers]
    assert bits["y"] == [trial["config"]["bits"].get(layer["name"]) for layer in layers]
    assert figure["layout"]["meta"]["trial_number"] == 5


def test_importances_per_objective_with_ped_anova(client):
    body = client.get(f"/api/v1/studies/{STUDY}/importances").json()
    assert body["evaluator"] == "PED-ANOVA" and body["n_trials"] == 24 and body["note"] is None
    assert [o["objective"] for o in body["objectives"]] == ["fidelity", "model_bytes", "latency_ms"]
    params = set(client.get(f"/api/v1/studies/{STUDY}/trials/0").json()["params"])
    for series in [*(o["importances"] for o in body["objectives"]), body["pareto"]]:
        assert set(series) <= params and sum(series.values()) == pytest.approx(1.0)
        assert list(series.values()) == sorted(series.values(), reverse=True)
    figure = client.get(f"/ui/api/studies/{STUDY}/figures/importances").json()
    assert figure["document"] == body
    assert len(figure["importances"]["data"]) == 4
    assert client.get("/api/v1/studies/nope/importances").status_code == 404


def test_importances_of_a_study_without_trials(tmp_path):
    with _client(f"sqlite:///{tmp_path / 'empty.db'}") as c:
        spec = {"task": "synthetic", "knobs": [{"kind": "bitwidth"}], "objectives": [{"name": "fidelity"}], "n_trials": 3}
        study = c.post("/api/v1/studies", json=spec).json()["id"]
        body = c.get(f"/api/v1/studies/{study}/importances").json()
        assert body["objectives"] == [] and "at least" in body["note"]
        figures = c.get(f"/ui/api/studies/{study}/figures").json()
        assert figures["n_complete"] == 0 and not figures["pareto"]["data"]


def test_pages_say_when_a_token_is_needed(database):
    with _client(database, api_token="t0ken") as c:
        assert '<meta name="paretoml-auth" content="required">' in c.get("/new").text
        assert c.get("/ui/api/meta").json() == {"auth_required": True}
