"""figures.py: pure functions from the REST API's documents to plotly figures (no browser)."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

from paretoml.dashboard import figures

MAX = {"name": "fidelity", "direction": "maximize"}
MIN = {"name": "model_bytes", "direction": "minimize"}
LAT = {"name": "latency_ms", "direction": "minimize"}


def trial(number, values, state="complete", feasible=True):
    return {"number": number, "state": state, "values": values, "feasible": feasible, "duration_s": 0.1}


def frontier(points, history=()):
    return {"objectives": [], "points": [{"trial_number": n, "values": v} for n, v in points],
            "history": list(history), "reference_point": None}


def by_role(fig, role):
    found = [t for t in fig.data if (t.meta or {}).get("role") == role]
    assert len(found) == 1, f"{role}: {len(found)} traces"
    return found[0]


def roundtrip(fig):
    """What the browser gets: the JSON, valid for plotly."""
    data = json.loads(fig.to_json())
    go.Figure(data)  # validates every property again
    return data


TWO = [MAX, MIN]
TRIALS = [
    trial(0, {"fidelity": 0.9, "model_bytes": 100.0}),  # front
    trial(1, {"fidelity": 0.8, "model_bytes": 150.0}),  # dominated by 0
    trial(2, {"fidelity": 0.99, "model_bytes": 400.0}),  # front
    trial(3, {"fidelity": 1.0, "model_bytes": 50.0}, feasible=False),  # infeasible
    trial(4, None, state="fail"),
    trial(5, None, state="running"),
    trial(6, {"fidelity": 0.7}),  # model_bytes was not finite: the API leaves it out
]
FRONT = frontier([(0, TRIALS[0]["values"]), (2, TRIALS[2]["values"])])


def test_pareto_two_objectives_splits_front_dominated_and_infeasible():
    fig = figures.pareto_figure(TWO, TRIALS, FRONT)
    pareto, dominated, infeasible = (by_role(fig, r) for r in ("pareto", "dominated", "infeasible"))
    assert all(t.type == "scattergl" for t in fig.data)
    # the front is the API's frontier, in x order, with a step line (two objectives)
    assert list(pareto.customdata[:, 0]) == [0, 2]
    assert list(pareto.x) == [0.9, 0.99] and list(pareto.y) == [100.0, 400.0]
    assert pareto.mode == "lines+markers" and pareto.line.shape == "vh"  # x is maximised
    assert list(dominated.customdata[:, 0]) == [1]  # trial 6 lacks a value on an axis
    assert list(infeasible.customdata[:, 0]) == [3] and infeasible.marker.symbol == "x"
    # customdata rows: number, then every objective's value (for hover and click)
    assert list(infeasible.customdata[0]) == [3, 1.0, 50.0]
    assert fig.layout.meta["front_size"] == 2 and fig.layout.meta["axes"] == ["fidelity", "model_bytes"]
    assert fig.layout.xaxis.title.text == "fidelity (max)" and fig.layout.yaxis.title.text == "model_bytes (min)"
    assert pareto.name == "Pareto front (2)"
    roundtrip(fig)


def test_pareto_front_count_is_the_frontier_even_for_trials_not_in_the_list():
    # a trial completed between the two reads: the figure shows the API's frontier as it is
    extra = (9, {"fidelity": 0.5, "model_bytes": 10.0})
    fig = figures.pareto_figure(TWO, TRIALS, frontier([*((p["trial_number"], p["values"]) for p in FRONT["points"]),
                                                       extra]))
    assert sorted(by_role(fig, "pareto").customdata[:, 0]) == [0, 2, 9]


def test_pareto_three_objectives_is_3d_and_axes_are_selectable():
    three = [MAX, MIN, LAT]
    rows = [trial(i, {"fidelity": 0.5 + i / 100, "model_bytes": 100.0 - i, "latency_ms": 1.0 + (i % 3)})
            for i in range(20)]
    front = frontier([(19, rows[19]["values"])])
    fig = figures.pareto_figure(three, rows, front)
    assert {t.type for t in fig.data} == {"scatter3d"}
    assert fig.layout.scene.zaxis.title.text == "latency_ms (min)"
    assert len(by_role(fig, "pareto").x) == 1 and len(by_role(fig, "dominated").x) == 19
    flat = figures.pareto_figure(three, rows, front, axes=["latency_ms", "fidelity"])
    assert {t.type for t in flat.data} == {"scattergl"}
    assert flat.layout.xaxis.title.text == "latency_ms (min)"
    assert by_role(flat, "pareto").mode == "markers"  # no step line: a projection of a 3-D front
    assert flat.layout.meta["three_d_limited"] is False
    roundtrip(fig)


def test_pareto_many_points_open_in_2d():
    three = [MAX, MIN, LAT]
    n = figures.THREE_D_DEFAULT_MAX_POINTS + 1
    rows = [trial(i, {"fidelity": 0.5, "model_bytes": float(i), "latency_ms": 1.0}) for i in range(n)]
    fig = figures.pareto_figure(three, rows, frontier([(0, rows[0]["values"])]))
    assert {t.type for t in fig.data} == {"scattergl"}
    assert fig.layout.meta["three_d_limited"] is True and fig.layout.meta["n_points"] == n
    # asked for, the 3-D view is still there
    assert {t.type for t in figures.pareto_figure(three, rows, frontier([]), axes=["fidelity", "model_bytes",
                                                                                   "latency_ms"]).data} == {"scatter3d"}


def test_large_studies_are_sent_as_typed_arrays():
    rows = [trial(i, {"fidelity": i / 10_000, "model_bytes": float(i)}) for i in range(10_000)]
    data = json.loads(figures.pareto_figure(TWO, rows, frontier([])).to_json())
    dominated = next(t for t in data["data"] if t["meta"]["role"] == "dominated")
    assert set(dominated["x"]) == {"dtype", "bdata"}  # base64, not 10,000 decimal numbers
    assert dominated["customdata"]["shape"] in ("10000, 3", [10000, 3])


@pytest.mark.parametrize("axes, message", [
    (["accuracy", "fidelity"], "not objectives"),
    (["fidelity", "fidelity"], "different"),
    (["fidelity"], "two or three"),
])
def test_pareto_rejects_bad_axes(axes, message):
    with pytest.raises(figures.FigureError, match=message):
        figures.pareto_figure(TWO, TRIALS, FRONT, axes=axes)


def test_pareto_single_objective_against_trial_number():
    rows = [trial(i, {"fidelity": v}) for i, v in enumerate([0.5, 0.7, 0.6])]
    fig = figures.pareto_figure([MAX], rows, frontier([(1, {"fidelity": 0.7})]))
    assert list(by_role(fig, "pareto").x) == [1] and list(by_role(fig, "dominated").x) == [0, 2]
    assert fig.layout.xaxis.title.text == "trial number"


def test_pareto_without_completed_trials_says_so():
    fig = figures.pareto_figure(TWO, [trial(0, None, state="running")], frontier([]))
    assert not fig.data and "no completed trials" in fig.layout.annotations[0].text


def test_best_so_far_follows_the_direction_and_skips_infeasible_trials():
    rows = [trial(0, {"fidelity": 0.5, "model_bytes": 300.0}), trial(1, {"fidelity": 0.4, "model_bytes": 200.0}),
            trial(2, {"fidelity": 0.9, "model_bytes": 10.0}, feasible=False), trial(3, None, state="fail"),
            trial(4, {"fidelity": 0.7, "model_bytes": 250.0}), trial(5, {"fidelity": 0.6, "model_bytes": 100.0})]
    assert figures.best_so_far(MAX, rows) == ([0, 4, 5], [0.5, 0.7, 0.7])
    assert figures.best_so_far(MIN, rows) == ([0, 1, 5], [300.0, 200.0, 100.0])
    assert figures.best_so_far(MIN, [trial(0, None, state="running")]) == ([], [])


def test_history_has_hypervolume_and_one_row_per_objective():
    history = [{"n_complete": 1, "trial_number": 0, "front_size": 1, "hypervolume": 10.0, "created_at": "x"},
               {"n_complete": 3, "trial_number": 2, "front_size": 2, "hypervolume": 12.5, "created_at": "x"}]
    fig = figures.history_figure(TWO, TRIALS, frontier([], history))
    hv = by_role(fig, "hypervolume")
    assert list(hv.x) == [0, 2, 6] and list(hv.y) == [10.0, 12.5, 12.5]  # extended to the last completed trial
    assert hv.line.shape == "hv"
    best = [t for t in fig.data if (t.meta or {}).get("role") == "best"]
    assert [t.meta["objective"] for t in best] == ["fidelity", "model_bytes"]
    assert [a.text for a in fig.layout.annotations][0].startswith("hypervolume")
    # rows share the x axis: three rows
    assert fig.layout.xaxis3.title.text == "trial number"
    roundtrip(fig)


def test_history_axes_fit_the_data_and_hypervolume_names_its_reference_point():
    """A flat best-so-far line of 0.986 is drawn on an axis around 0.986, not on 0.5-1.5."""
    flat = [trial(n, {"fidelity": 0.986, "model_bytes": 100.0 - n}) for n in range(4)]
    history = [{"n_complete": 1, "trial_number": 0, "front_size": 1, "hypervolume": 10.0, "created_at": "x"},
               {"n_complete": 3, "trial_number": 2, "front_size": 2, "hypervolume": 12.5, "created_at": "x"}]
    document = {**frontier([], history), "reference_point": {"fidelity": 0.0, "model_bytes": 61000.0}}
    fig = figures.history_figure(TWO, flat, document)
    low, high = fig.layout.yaxis2.range  # row 2: best fidelity so far
    assert low < 0.986 < high and high - low < 0.05
    low, high = fig.layout.yaxis3.range  # row 3: best model_bytes, 100 down to 97
    assert 90 < low < 97 and 100 < high < 110
    low, high = fig.layout.yaxis.range  # the hypervolume, 10 to 12.5
    assert 9 < low < 10 and 12.5 < high < 13.5
    title = fig.layout.annotations[0].text
    assert "reference point" in title and "fidelity 0" in title and "model_bytes 61,000" in title
    roundtrip(fig)


def test_history_without_hypervolume_has_only_objectives():
    fig = figures.history_figure(TWO, TRIALS, frontier([], [{"trial_number": 0, "hypervolume": None}]))
    assert not [t for t in fig.data if (t.meta or {}).get("role") == "hypervolume"]
    assert len(fig.data) == 2


def test_importance_bars_per_objective_and_front():
    doc = {"evaluator": "PED-ANOVA", "n_trials": 40, "note": None,
           "objectives": [{"objective": "fidelity", "direction": "maximize", "importances": {"prune:0": 0.8, "bits:0": 0.2}},
                          {"objective": "model_bytes", "direction": "minimize", "importances": {"bits:0": 0.9, "prune:0": 0.1}}],
           "pareto": {"bits:0": 0.6, "prune:0": 0.4}}
    fig = figures.importance_figure(doc)
    assert [t.meta["series"] for t in fig.data] == ["fidelity", "model_bytes", "Pareto front (all objectives)"]
    assert all(t.orientation == "h" for t in fig.data)
    assert list(fig.data[0].y) == ["prune:0", "bits:0"]  # least important first: the top bar is the most important
    assert list(fig.data[0].x) == [0.8, 0.2]
    assert "PED-ANOVA" in fig.layout.xaxis.title.text and "40 trials" in fig.layout.xaxis.title.text
    roundtrip(fig)


def test_importance_without_trials_shows_the_note():
    fig = figures.importance_figure({"evaluator": "PED-ANOVA", "n_trials": 2, "objectives": [],
                                     "note": "importances need at least 4 completed trials (2 so far)"})
    assert not fig.data and "at least 4" in fig.layout.annotations[0].text


LAYERS = [{"name": n, "kind": k, "module_type": "X", "weight_shape": [2, 2], "num_params": 4, "macs": 4,
           "out_channels": 2} for n, k in (("features.0", "conv"), ("features.3", "conv"), ("classifier", "linear"))]


def test_layer_chart_shows_bits_prune_and_merge_in_model_order():
    config = {"bits": {"classifier": 4, "features.0": 8, "features.3": 2}, "prune": {"features.0": 0.25},
              "prune_method": {"features.0": "structured"},
              "merge": {"features.0": [0.2, 0.8], "features.3": [0.5, 0.5], "classifier": [1.0, 0.0]},
              "batch_size": None, "learning_rate": None, "hparams": {}}
    fig = figures.layer_config_figure(LAYERS, {"number": 7, "config": config})
    bits, prune = by_role(fig, "bits"), by_role(fig, "prune")
    assert list(bits.x) == ["features.0", "features.3", "classifier"]
    assert list(bits.y) == [8, 2, 4] and list(bits.text) == ["8", "2", "4"]
    assert list(prune.y) == [0.25, None, None]
    unset = [t for t in fig.data if (t.meta or {}).get("role") == "unset"]
    assert [(t.meta["knob"], list(t.x)) for t in unset] == [("prune", ["features.3", "classifier"])]
    merges = sorted((t for t in fig.data if (t.meta or {}).get("role") == "merge"), key=lambda t: t.meta["index"])
    assert [list(t.y) for t in merges] == [[0.2, 0.5, 1.0], [0.8, 0.5, 0.0]]
    assert [a.text for a in fig.layout.annotations[:3]] == ["bitwidth (bits)", "pruning ratio", "merge coefficient"]
    assert fig.layout.meta["trial_number"] == 7
    roundtrip(fig)


def test_layer_chart_rows_only_for_knobs_the_trial_has():
    fig = figures.layer_config_figure(LAYERS, {"number": 1, "config": {"bits": {"classifier": 8}, "prune": {},
                                                                        "merge": {}}})
    assert [(t.meta or {}).get("role") for t in fig.data] == ["bits", "unset"]
    assert len([a for a in fig.layout.annotations if a.text in dict(figures.KNOB_ROWS).values()]) == 1


def test_layer_chart_for_a_trial_without_config():
    fig = figures.layer_config_figure(LAYERS, {"number": 3, "config": None})
    assert not fig.data and "no per-layer configuration" in fig.layout.annotations[0].text


def test_layer_chart_keeps_layers_missing_from_the_introspection_last():
    fig = figures.layer_config_figure(LAYERS[:1], {"number": 1, "config": {"bits": {"features.0": 4, "extra": 8}}})
    assert list(by_role(fig, "bits").x) == ["features.0", "extra"]


def test_value_formats_and_titles():
    assert figures.value_format("model_bytes") == ",.0f"
    assert figures.value_format("accuracy") == ".4f"
    assert figures.value_format("latency_ms") == ".4g"
    assert figures.axis_title(MAX) == "fidelity (max)"


def test_layer_chart_shows_kv_key_and_value_bits_beside_weight_bits():
    layers = [{"name": n, "kind": "linear", "module_type": "Linear", "weight_shape": [2, 2], "num_params": 4,
               "macs": 4, "out_channels": 2} for n in ("l.0.q_proj", "l.0.k_proj", "l.1.q_proj", "l.1.k_proj")]
    config = {"bits": {"l.0.q_proj": 8, "l.0.k_proj": 8, "l.1.q_proj": 16, "l.1.k_proj": 4},
              "kv_bits": {"l.0.k_proj": [8, 4], "l.1.k_proj": [16, 2]}}
    fig = figures.layer_config_figure(layers, {"number": 2, "config": config})
    keys, values = by_role(fig, "kv_key"), by_role(fig, "kv_value")
    assert list(keys.x) == list(by_role(fig, "bits").x)  # the same layer axis as the weight bits
    assert list(keys.y) == [None, 8, None, 16] and list(values.y) == [None, 4, None, 2]
    assert not [t for t in fig.data if (t.meta or {}).get("role") == "unset"]  # only k_proj layers carry KV
