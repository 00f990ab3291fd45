"""The dashboard in Chromium against a real server and a real study."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Console, Server, ready

# the plotted points of a trace role, as drawn (plotly's full data of the chart)
POINTS = """(role) => {
  const gd = document.getElementById('pareto');
  const traces = gd._fullData.filter((t) => t.meta && t.meta.role === role && t.visible === true);
  return traces.reduce((n, t) => n + t._length, 0);
}"""

# every drawn 2-D point, in page pixels, with its trial number and role
PIXELS = """() => {
  const gd = document.getElementById('pareto');
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  const out = [];
  for (const t of gd._fullData) {
    for (let i = 0; i < t._length; i++) {
      out.push({role: t.meta.role, number: t.customdata[i][0],
                x: box.left + xa._offset + xa.l2p(t.x[i]), y: box.top + ya._offset + ya.l2p(t.y[i])});
    }
  }
  return out;
}"""


def study_id(server: Server) -> str:
    return server.seeded["id"]


def test_study_list(server: Server, page: Any, shots: Path) -> None:
    page.goto(server.url + "/")
    ready(page)
    row = page.locator(f"#studies tr[data-study='{study_id(server)}']")
    assert row.locator(".badge").inner_text() == "completed"
    budget = server.seeded["progress"]["budget"]
    assert row.locator(".progress .label").inner_text() == f"{budget} / {budget}"
    best = row.locator(".best-list li")
    assert best.count() == 3 and "fidelity" in best.nth(0).inner_text()
    assert row.locator("td").nth(3).inner_text() == "synthetic" and row.locator("td").nth(4).inner_text() == "random"
    page.screenshot(path=shots / "01-study-list.png", full_page=True)


def test_pareto_chart_has_the_frontier_points(server: Server, page: Any, shots: Path) -> None:
    sid = study_id(server)
    frontier = server.get(f"/api/v1/studies/{sid}/frontier")
    trials = server.get(f"/api/v1/studies/{sid}/trials?brief=true&limit=1000")["items"]
    complete = [t for t in trials if t["state"] == "complete"]
    page.goto(f"{server.url}/studies/{sid}")
    ready(page, "body[data-interactive='1']")
    ready(page, "#importances[data-ready='1']")
    # three objectives: 3-D, the front highlighted among the others
    assert page.evaluate("document.getElementById('pareto')._fullData.map((t) => t.type)") == ["scatter3d"] * 3
    assert page.evaluate(POINTS, "pareto") == len(frontier["points"]) > 0
    drawn = sum(page.evaluate(POINTS, role) for role in ("pareto", "dominated", "infeasible"))
    assert drawn == len(complete)
    assert page.evaluate(POINTS, "infeasible") == sum(not t["feasible"] for t in complete) > 0
    assert page.locator("#importances .main-svg").count() > 0 and page.locator("#history .main-svg").count() > 0
    page.screenshot(path=shots / "02-study-3d.png", full_page=True)

    # any two axes: a 2-D projection with the same front
    page.select_option("#axis-z", "")
    page.wait_for_function("document.getElementById('pareto').dataset.axes === 'fidelity,model_bytes'")
    assert set(page.evaluate("document.getElementById('pareto')._fullData.map((t) => t.type)")) == {"scattergl"}
    assert page.evaluate(POINTS, "pareto") == len(frontier["points"])
    page.select_option("#axis-x", "latency_ms")
    page.wait_for_function("document.getElementById('pareto').dataset.axes === 'latency_ms,model_bytes'")
    assert page.evaluate(POINTS, "pareto") == len(frontier["points"])


def test_table_sorts_and_pages(server: Server, page: Any) -> None:
    sid = study_id(server)
    page.goto(f"{server.url}/studies/{sid}")
    ready(page, "body[data-interactive='1']")
    page.wait_for_function("window.paretoml.state.trials !== null")
    assert page.locator("#trials tbody tr").count() == 25
    page.locator("#trials th[data-key='v:model_bytes']").click()
    shown = page.locator("#trials tbody tr td:nth-child(4)").all_inner_texts()
    trials = server.get(f"/api/v1/studies/{sid}/trials?brief=true&limit=1000&state=complete")["items"]
    smallest = min(t["values"]["model_bytes"] for t in trials)
    assert shown[0] == f"{round(smallest)} B"
    page.locator("#next-page").click()
    assert page.locator("#trials-pager").inner_text().startswith("26–")
    page.check("#pareto-only")
    front = len(server.get(f"/api/v1/studies/{sid}/frontier")["points"])
    assert page.locator("#trials tbody tr").count() == min(front, 25)


def test_click_on_a_point_opens_that_trial(server: Server, page: Any, shots: Path) -> None:
    sid = study_id(server)
    detail = server.get(f"/api/v1/studies/{sid}")
    page.goto(f"{server.url}/studies/{sid}")
    ready(page, "body[data-interactive='1']")
    page.select_option("#axis-z", "")
    page.wait_for_function("document.getElementById('pareto').dataset.axes.split(',').length === 2")
    points = page.evaluate(PIXELS)
    # a Pareto point that no other point sits on or near, so the click is not ambiguous
    alone = [p for p in points if p["role"] == "pareto" and all(
        q is p or abs(q["x"] - p["x"]) + abs(q["y"] - p["y"]) > 12 for q in points)]
    assert alone, "every Pareto point is crowded"
    target = alone[0]
    number = int(target["number"])
    page.mouse.move(target["x"], target["y"])
    page.wait_for_timeout(200)
    page.mouse.click(target["x"], target["y"])
    ready(page, f"#trial[data-trial='{number}'][data-ready='1']")
    assert page.locator("#trial").inner_text().startswith(f"Trial #{number}")

    trial = server.get(f"/api/v1/studies/{sid}/trials/{number}")
    layers = [layer["name"] for layer in detail["layers"]]
    drawn = page.evaluate("""() => {
      const gd = document.getElementById('layer-chart');
      const out = {};
      for (const t of gd._fullData) if (t.meta && ['bits', 'prune'].includes(t.meta.role))
        out[t.meta.role] = {x: Array.from(t.x), y: Array.from(t.y)};
      return out;
    }""")
    assert drawn["bits"]["x"] == layers
    assert drawn["bits"]["y"] == [trial["config"]["bits"].get(name) for name in layers]
    assert drawn["prune"]["y"][0] == trial["config"]["prune"][layers[0]]
    # its objectives, and how each was obtained
    for name, how in trial["objectives_how"].items():
        row = page.locator(f"#trial tr.objective[data-objective='{name}']")
        assert row.locator(".badge").inner_text() == how["how"]
    assert page.locator("#trial .badge.pareto").count() == 1
    page.screenshot(path=shots / "03-study-trial-selected.png", full_page=True)

    with page.expect_download() as download:
        page.click("#download-config")
    assert download.value.suggested_filename == f"{sid}-trial-{number}-config.json"
    assert json.loads(Path(download.value.path()).read_text()) == trial["config"]

    # the trial's own page
    page.goto(f"{server.url}/studies/{sid}/trials/{number}")
    ready(page)
    assert page.locator("#trial").inner_text().startswith(f"Trial #{number}")
    assert page.evaluate("document.getElementById('layer-chart')._fullData.length") >= 2
    page.screenshot(path=shots / "04-trial-page.png", full_page=True)
    # the compressed model, rebuilt by the server from the trial's config
    with page.expect_download(timeout=60_000) as download:
        page.click("#download-model")
    assert download.value.suggested_filename == f"{sid}-trial{number}.zip"
    with zipfile.ZipFile(download.value.path()) as archive:
        manifest = json.loads(archive.read(f"{sid}-trial{number}/manifest.json"))
    assert manifest["trial"] == number and manifest["config"] == trial["config"]


def test_new_study_form_submits_and_the_study_appears(server: Server, page: Any, shots: Path) -> None:
    page.goto(server.url + "/new")
    ready(page)
    names = page.locator("#example option").all_inner_texts()
    assert "digits_cnn.yaml" in names and "digits_merge.yaml" in names
    ready(page, "#spec-valid")  # the first example, validated by the server
    page.select_option("#example", label="digits_merge.yaml")
    page.wait_for_function("document.getElementById('spec-valid')?.textContent.includes('digits-merge')")
    page.fill("#spec", "name: e2e-form\ntask: synthetic\nknobs:\n  - kind: bitwidth\n    choices: [4, 8]\n"
                       "objectives:\n  - name: fidelity\n  - name: model_bytes\nsampler: {name: random}\nn_trials: 3\n")
    page.wait_for_function("document.getElementById('spec-valid')?.textContent.includes('task synthetic')")
    page.screenshot(path=shots / "05-new-study.png", full_page=True)
    page.click("#submit")
    page.wait_for_url("**/?created=*")
    created = page.url.split("created=")[1]
    assert created.startswith("e2e-form-")
    ready(page)
    row = page.locator(f"#studies tr[data-study='{created}']")
    assert row.count() == 1
    assert row.locator(".badge").inner_text() in {"queued", "running", "completed"}
    page.screenshot(path=shots / "06-list-after-submit.png", full_page=True)


def test_bad_spec_shows_the_errors(server: Server, page: Any, console: Console, shots: Path) -> None:
    console.allow("status of 422")  # /specs/validate answers 422 for a bad spec, by contract
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    page.goto(server.url + "/new")
    ready(page)
    page.fill("#spec", "task: synthetic\nknobs:\n  - kind: bitwidth\nobjectives:\n  - name: accuracyy\nn_trials: 0\n")
    errors = page.locator("#spec-errors li")
    errors.first.wait_for()
    text = errors.all_inner_texts()
    assert any(t.startswith("objectives[0].name") and "unknown objective 'accuracyy'" in t for t in text), text
    assert any(t.startswith("n_trials") for t in text), text
    assert page.get_attribute("#spec", "aria-invalid") == "true"
    page.screenshot(path=shots / "07-new-study-errors.png", full_page=True)
    page.click("#submit")
    page.wait_for_timeout(300)
    assert page.url.endswith("/new")
    assert not [r for r in requests if r.startswith("POST") and r.endswith("/api/v1/studies")]
    page.fill("#spec", "task: [synthetic\n")
    page.wait_for_function("document.getElementById('spec-errors')?.textContent.includes('not valid YAML')")
    page.select_option("#format", "json")
    page.wait_for_function("document.getElementById('spec-errors')?.textContent.includes('not valid JSON')")


def test_stop_and_resume_buttons_with_the_token(token_server: Server, page: Any, console: Console) -> None:
    # this server accepts studies and runs none, so the study stays queued until stopped
    console.allow("status of 401")  # the first click, before the page knows the token
    spec = {"name": "e2e-buttons", "task": "synthetic", "knobs": [{"kind": "bitwidth"}],
            "objectives": [{"name": "fidelity"}], "n_trials": 5}
    sid = token_server.request("POST", "/api/v1/studies", spec)["id"]
    page.goto(f"{token_server.url}/studies/{sid}")
    ready(page)
    badge = "document.querySelector('#study-status .badge').textContent"
    assert page.evaluate(badge) == "queued" and page.is_disabled("#resume") and page.is_enabled("#stop")
    page.click("#stop")
    dialog = page.locator("#token-dialog")
    dialog.wait_for(state="visible")
    dialog.locator("input").fill("e2e-s3cret")
    dialog.locator("button[value='ok']").click()
    page.wait_for_function(f"{badge} === 'stopped'")
    assert page.is_enabled("#resume") and page.is_disabled("#stop")
    assert token_server.get(f"/api/v1/studies/{sid}")["status"] == "stopped"
    page.click("#resume")  # the token is known now: no dialog
    page.wait_for_function(f"{badge} === 'queued'")
    assert token_server.get(f"/api/v1/studies/{sid}")["status"] == "queued"
    assert not page.is_visible("#token-dialog")


def test_token_is_asked_for_and_kept(token_server: Server, page: Any, console: Console, shots: Path) -> None:
    console.allow("status of 401")  # the first submission, without a token
    page.goto(token_server.url + "/new")
    ready(page)
    assert page.is_visible("#token-field")  # the server says it has a token
    page.fill("#spec", "name: e2e-token\ntask: synthetic\nknobs:\n  - kind: bitwidth\n"
                       "objectives:\n  - name: fidelity\nn_trials: 2\n")
    ready(page, "#spec-valid")
    page.click("#submit")
    dialog = page.locator("#token-dialog")
    dialog.wait_for(state="visible")
    page.screenshot(path=shots / "08-token-dialog.png", full_page=True)
    dialog.locator("input").fill("e2e-s3cret")
    dialog.locator("button[value='ok']").click()
    page.wait_for_url("**/?created=*")
    created = page.url.split("created=")[1]
    assert page.evaluate("sessionStorage.getItem('paretoml-token')") == "e2e-s3cret"
    ready(page)
    assert page.locator(f"#studies tr[data-study='{created}']").count() == 1
    assert page.locator("#token-button").inner_text() == "token set"


def test_api_docs_render_offline(server: Server, page: Any, shots: Path) -> None:
    # Swagger UI comes from the installed fastapi-offline package: every request stays on
    # this server (the CI machine reaches no CDN), and the operations are listed
    hosts: list[str] = []
    page.on("request", lambda r: hosts.append(r.url.split("/")[2]))
    page.goto(server.url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "ParetoML" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any(p.replace("\u200b", "") == "/api/v1/studies" for p in paths), paths
    assert set(hosts) == {server.url.split("/")[2]}, hosts
    page.screenshot(path=shots / "09-api-docs.png")


def test_trial_panel_without_a_rung_curve_shows_no_null(server: Server, page: Any) -> None:
    sid = study_id(server)
    page.goto(f"{server.url}/studies/{sid}/trials/0")
    ready(page)
    ready(page, "#trial[data-ready='1']")
    assert page.locator("#rung-curve").count() == 0  # the synthetic task has no fine-tuning rungs
    # what the panel shows outside its elements: a null child became the text "null" before
    stray = page.evaluate("[...document.getElementById('trial').childNodes]"
                          ".filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent)")
    assert stray == []
    facts = page.locator("#trial .kv").inner_text()
    assert "worker" in facts and "null" not in page.locator("#trial").inner_text().split("Optuna parameters")[0]


def test_history_axes_fit_the_data_and_show_the_reference_point(server: Server, page: Any) -> None:
    sid = study_id(server)
    page.goto(f"{server.url}/studies/{sid}")
    ready(page)
    drawn = page.evaluate("""() => {
      const gd = document.getElementById('history');
      const out = [];
      for (const t of gd._fullData) {
        const axis = gd._fullLayout[t.yaxis.replace('y', 'yaxis')];
        out.push({role: t.meta.role, ys: Array.from(t.y), range: axis.range});
      }
      return {traces: out, titles: gd._fullLayout.annotations.map((a) => a.text)};
    }""")
    frontier = server.get(f"/api/v1/studies/{sid}/frontier")
    assert "reference point" in drawn["titles"][0]
    for name, value in frontier["reference_point"].items():
        assert f"{name} {value:,.6g}" in drawn["titles"][0]
    for trace in drawn["traces"]:
        low, high = trace["range"]
        lo, hi = min(trace["ys"]), max(trace["ys"])
        assert low <= lo and hi <= high
        # the axis spans the data (a tenth or so more), not a unit around a flat line
        assert high - low <= max(1.25 * (hi - lo), 0.03 * abs(hi)), trace


def test_unknown_study_page_says_not_found(server: Server, page: Any, console: Console, shots: Path) -> None:
    console.allow("status of 404")  # the page's own requests for the study, answered 404 by contract
    page.goto(f"{server.url}/studies/no-such-study")
    ready(page, "body[data-ready='error']")
    assert "no study named “no-such-study”" in page.locator("#not-found").inner_text().lower().replace("there is ", "")
    main = page.locator("main").inner_text()
    assert "computing" not in main and "loading" not in main
    assert page.is_disabled("#stop") and page.is_disabled("#resume") and page.is_disabled("#delete")
    page.screenshot(path=shots / "10-unknown-study.png", full_page=True)
