"""A pruned trial's page, in Chromium, against the real server: its PRUNED state, where it was
stopped, and its intermediate curve as the REST document gives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import SEED_STUDY, Server, ready

# the rung curve as drawn: x and y of each trace, and the x axis title
CURVE = """() => {
  const gd = document.getElementById('rung-curve');
  return {traces: gd._fullData.map((t) => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)})),
          xtitle: gd._fullLayout.xaxis.title.text};
}"""

# no fine-tuning: rungs over evaluation size; 2-bit layers are bad from the first quarter on
PRUNED_STUDY = {
    **SEED_STUDY,
    "name": "e2e-pruned",
    "knobs": [{"kind": "bitwidth", "choices": [2, 8]}],
    "deploy": {"mode": "runtime", "emulate": True},  # 2-bit has no CPU kernel: emulated, not dropped
    "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
    "constraints": [],
    "baselines": [],
    "pruner": {"name": "successive-halving", "options": {"min_trials": 2}, "over": "evaluation",
               "rungs": [0.25, 0.5]},
    "n_trials": 12,
}


def test_a_pruned_trial_page_shows_its_state_and_intermediate_curve(server: Server, page: Any, shots: Path) -> None:
    created = server.request("POST", "/api/v1/studies", PRUNED_STUDY)
    sid = created["id"]
    assert server.wait_for(sid, {"completed", "failed"})["status"] == "completed"
    items = server.get(f"/api/v1/studies/{sid}/trials?brief=true&limit=100&state=pruned")["items"]
    assert items, "no trial was pruned"
    docs = [server.get(f"/api/v1/studies/{sid}/trials/{t['number']}") for t in items]
    doc = max(docs, key=lambda d: len(d["intermediate_values"]))  # the longest curve
    number = doc["number"]
    assert doc["state"] == "pruned" and doc["rung_unit"] == "validation samples"
    steps = sorted(int(s) for s in doc["intermediate_values"])
    assert steps and steps[-1] == doc["stopped_at"]

    page.goto(f"{server.url}/studies/{sid}/trials/{number}")
    ready(page)
    ready(page, f"#trial[data-trial='{number}'][data-ready='1']")
    text = page.locator("#trial").inner_text()
    assert text.startswith(f"Trial #{number}")
    assert page.locator("#trial .badge", has_text="pruned").count() == 1
    assert f"{doc['stopped_at']} validation samples scored (pruned)" in text
    assert page.locator("#download-model").count() == 0  # nothing to export from a stopped trial
    drawn = page.evaluate(CURVE)
    assert drawn["xtitle"] == "validation samples"
    curve = next(t for t in drawn["traces"] if t["name"] == "rung metric")
    assert curve["x"] == steps
    assert curve["y"] == [doc["intermediate_values"][str(s)] for s in steps]
    stop = next(t for t in drawn["traces"] if t["name"] == "stopped here")
    assert stop["x"] == [doc["stopped_at"]] and stop["y"] == [curve["y"][-1]]
    page.screenshot(path=shots / "05-pruned-trial.png", full_page=True)
