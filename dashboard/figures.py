"""Figures of the dashboard: pure functions from study data to ``plotly.graph_objects.Figure``.

Every function takes the JSON documents of the REST API, as dicts, exactly as
``/api/v1`` returns them (``objectives`` as in ``StudySummary``, trials as
``TrialBrief`` or ``Trial``, ``Frontier``, ``StudyDetail.layers``, the importances
document), and returns a figure; none of them reads a database or the network. The
dashboard serves these figures as JSON and the browser only places them, so what the
unit tests check is what a user sees.

Figures of many trials use WebGL traces (``scattergl``) and numpy arrays, which plotly
sends as compact typed arrays: a study of 10,000 trials is one small download and one
fast draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PARETO_COLOR = "#2563eb"
DOMINATED_COLOR = "#9ca3af"
INFEASIBLE_COLOR = "#ea580c"
HYPERVOLUME_COLOR = "#059669"
SERIES = ("#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2")
TEMPLATE = "plotly_white"
FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 12}

#: Trace roles, in ``trace.meta["role"]``; the browser and the tests find traces by them.
ROLE_PARETO, ROLE_DOMINATED, ROLE_INFEASIBLE = "pareto", "dominated", "infeasible"

Json = Mapping[str, Any]


class FigureError(ValueError):
    """The figure cannot be drawn as asked (e.g. an axis that is not an objective)."""


# -- small helpers ---------------------------------------------------------------------------
def _names(objectives: Sequence[Json]) -> list[str]:
    return [str(o["name"]) for o in objectives]


def _maximize(objective: Json) -> bool:
    return objective.get("direction") == "maximize"


def axis_title(objective: Json) -> str:
    """``fidelity (max)``: the objective and which way is better."""
    return f"{objective['name']} ({'max' if _maximize(objective) else 'min'})"


def value_format(name: str) -> str:
    """A d3 format for an objective's values in hover labels."""
    if name.endswith("_bytes"):
        return ",.0f"
    if name in ("accuracy", "fidelity"):
        return ".4f"
    return ".4g"


def _base_layout(fig: go.Figure, height: int, **layout: Any) -> go.Figure:
    layout.setdefault("margin", {"l": 60, "r": 20, "t": 40, "b": 50})
    fig.update_layout(template=TEMPLATE, font=FONT, height=height, **layout)
    return fig


def _empty(message: str, height: int = 320) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 14, "color": "#6b7280"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _base_layout(fig, height)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: Above this many points a study of three or more objectives opens on the 2-D projection
#: of its first two objectives (the 3-D view is one choice away): a WebGL 3-D scatter
#: builds a mesh per marker, which costs seconds at 10,000 points in a software renderer,
#: and a cloud that dense hides its own front.
THREE_D_DEFAULT_MAX_POINTS = 5000


def resolve_axes(objectives: Sequence[Json], axes: Sequence[str] | None, n_points: int = 0) -> list[str]:
    """The objectives to plot: those asked for; by default the first three (3-D), or the
    first two when there are only two or more than ``THREE_D_DEFAULT_MAX_POINTS`` points."""
    names = _names(objectives)
    if not names:
        raise FigureError("the study has no objectives")
    if not axes:
        return names[:3] if len(names) >= 3 and n_points <= THREE_D_DEFAULT_MAX_POINTS else names[:2]
    chosen = list(axes)
    unknown = [a for a in chosen if a not in names]
    if unknown:
        raise FigureError(f"not objectives of this study: {', '.join(unknown)}; objectives: {', '.join(names)}")
    if len(set(chosen)) != len(chosen):
        raise FigureError("the axes must be different objectives")
    if not 1 <= len(chosen) <= 3:
        raise FigureError("choose one, two or three objectives")
    if len(chosen) == 1 and len(names) > 1:
        raise FigureError("choose two or three objectives")
    return chosen


# -- Pareto front ----------------------------------------------------------------------------
def _pareto_groups(trials: Sequence[Json], frontier: Json) -> dict[str, list[tuple[int, Mapping[str, Any]]]]:
    """(trial number, values) of the completed trials by role: front, dominated, infeasible."""
    front_values = {int(p["trial_number"]): p["values"] for p in frontier.get("points", [])}
    groups: dict[str, list[tuple[int, Mapping[str, Any]]]] = {ROLE_DOMINATED: [], ROLE_INFEASIBLE: []}
    for trial in trials:
        values = trial.get("values")
        if trial.get("state") != "complete" or not values or int(trial["number"]) in front_values:
            continue
        groups[ROLE_DOMINATED if trial.get("feasible", True) else ROLE_INFEASIBLE].append((int(trial["number"]), values))
    groups[ROLE_PARETO] = sorted(front_values.items())
    return groups


def pareto_figure(objectives: Sequence[Json], trials: Sequence[Json], frontier: Json,
                  axes: Sequence[str] | None = None) -> go.Figure:
    """The completed trials in objective space: the stored Pareto front (``frontier``)
    highlighted, dominated trials in grey, infeasible ones (a constraint violated) as
    crosses. Two axes give a WebGL scatter, three a 3-D scatter; a single-objective
    study is drawn against the trial number. Every point's ``customdata`` row is
    ``[trial number, value of each objective]``, which the page uses on click.
    """
    names = _names(objectives)
    by_name = {o["name"]: o for o in objectives}
    groups = _pareto_groups(trials, frontier)
    n_points = sum(len(rows) for rows in groups.values())
    chosen = resolve_axes(objectives, axes, n_points)

    single = len(names) == 1
    three_d = len(chosen) == 3
    hover = "trial %{customdata[0]}" + "".join(
        f"<br>{name} = %{{customdata[{i + 1}]:{value_format(name)}}}" for i, name in enumerate(names))
    styles = {
        ROLE_DOMINATED: {"name": "dominated", "marker": {"color": DOMINATED_COLOR, "size": 5, "opacity": 0.55}},
        ROLE_INFEASIBLE: {"name": "infeasible", "marker": {"color": INFEASIBLE_COLOR, "size": 6, "symbol": "x",
                                                            "opacity": 0.7}},
        ROLE_PARETO: {"name": "Pareto front", "marker": {"color": PARETO_COLOR, "size": 9 if not three_d else 5,
                                                          "line": {"color": "#1e3a8a", "width": 1}}},
    }
    columns_of = [names.index(a) for a in chosen]
    fig = go.Figure()
    for role in (ROLE_DOMINATED, ROLE_INFEASIBLE, ROLE_PARETO):  # the front last: drawn on top
        rows = groups[role]
        numbers = np.array([n for n, _ in rows], dtype=float)
        # values dicts leave out non-finite values; None becomes NaN here
        table = np.array([[v.get(name) for name in names] for _, v in rows], dtype=float).reshape(len(rows), len(names))
        keep = np.isfinite(table[:, columns_of]).all(axis=1)
        numbers, table = numbers[keep], table[keep]
        if role == ROLE_PARETO and len(chosen) == 2:
            order = np.lexsort((table[:, columns_of[1]], table[:, columns_of[0]]))
            numbers, table = numbers[order], table[order]
        custom = np.column_stack([numbers, table])
        style = styles[role]
        label = f"{style['name']} ({len(numbers)})"
        meta = {"role": role, "count": int(len(numbers))}
        if three_d:
            marker = dict(style["marker"])
            marker["size"] = {ROLE_PARETO: 5, ROLE_DOMINATED: 3, ROLE_INFEASIBLE: 4}[role]
            if role == ROLE_INFEASIBLE:
                marker["symbol"] = "cross"  # reads better than 'x' at this size in WebGL 3-D
            fig.add_trace(go.Scatter3d(
                x=table[:, columns_of[0]], y=table[:, columns_of[1]], z=table[:, columns_of[2]], mode="markers",
                name=label, marker=marker, customdata=custom, hovertemplate=hover + "<extra></extra>", meta=meta))
        else:
            x = numbers if single else table[:, columns_of[0]]
            y = table[:, columns_of[-1]]
            two_objectives = len(names) == 2 and role == ROLE_PARETO
            line_shape = "hv" if not _maximize(by_name[chosen[0]]) else "vh"
            fig.add_trace(go.Scattergl(
                x=x, y=y, mode="lines+markers" if two_objectives else "markers", name=label, marker=style["marker"],
                line={"color": PARETO_COLOR, "width": 1, "shape": line_shape} if two_objectives else None,
                customdata=custom, hovertemplate=hover + "<extra></extra>", meta=meta))

    if n_points == 0:
        return _empty("no completed trials yet", height=480)
    layout: dict[str, Any] = {
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        "uirevision": "|".join(chosen), "hovermode": "closest", "clickmode": "event",
        # the whole front (all objectives); whether 2-D was chosen for the number of points
        "meta": {"axes": chosen, "front_size": len(groups[ROLE_PARETO]), "n_points": n_points,
                 "three_d_limited": not axes and len(names) >= 3 and len(chosen) == 2},
    }
    if three_d:
        layout["scene"] = {"xaxis": {"title": {"text": axis_title(by_name[chosen[0]])}},
                           "yaxis": {"title": {"text": axis_title(by_name[chosen[1]])}},
                           "zaxis": {"title": {"text": axis_title(by_name[chosen[2]])}},
                           "camera": {"eye": {"x": 1.6, "y": 1.6, "z": 1.0}}}  # a little farther than plotly's
        layout["margin"] = {"l": 0, "r": 0, "t": 40, "b": 0}
    else:
        layout["xaxis_title"] = "trial number" if single else axis_title(by_name[chosen[0]])
        layout["yaxis_title"] = axis_title(by_name[chosen[-1]])
    fig = _base_layout(fig, 480)
    fig.update_layout(**layout)
    return fig


# -- history ---------------------------------------------------------------------------------
def best_so_far(objective: Json, trials: Sequence[Json]) -> tuple[list[int], list[float]]:
    """Change points of the best feasible value of one objective, in trial-number order,
    closed by the last completed trial (a step line drawn ``hv`` through them is the curve)."""
    name = objective["name"]
    sign = -1.0 if _maximize(objective) else 1.0
    xs: list[int] = []
    ys: list[float] = []
    best = math.inf
    last = None
    for trial in sorted(trials, key=lambda t: int(t["number"])):
        if trial.get("state") != "complete":
            continue
        last = int(trial["number"])
        value = (trial.get("values") or {}).get(name)
        if not trial.get("feasible", True) or not _finite(value):
            continue
        if sign * value < best:
            best = sign * value
            xs.append(last)
            ys.append(float(value))
    if xs and last is not None and last != xs[-1]:
        xs.append(last)
        ys.append(ys[-1])
    return xs, ys


def history_figure(objectives: Sequence[Json], trials: Sequence[Json], frontier: Json) -> go.Figure:
    """Hypervolume of the stored front, and each objective's best feasible value so
    far, against the trial number (one row each, x shared)."""
    history = [s for s in frontier.get("history", []) if _finite(s.get("hypervolume"))]
    rows = (["hypervolume"] if history else []) + _names(objectives)
    if not any(t.get("state") == "complete" for t in trials):
        return _empty("no completed trials yet")
    titles = ([_hypervolume_title(frontier.get("reference_point"))] if history else []) + [
        f"best {axis_title(o)} so far (feasible trials)" for o in objectives]
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.25 / len(rows),
                        subplot_titles=titles)
    row = 1
    last_complete = max(int(t["number"]) for t in trials if t.get("state") == "complete")
    if history:
        xs = [int(s["trial_number"]) for s in history]
        ys = [float(s["hypervolume"]) for s in history]
        if last_complete > xs[-1]:
            xs.append(last_complete)
            ys.append(ys[-1])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line={"shape": "hv", "color": HYPERVOLUME_COLOR},
                                 marker={"size": 4}, name="hypervolume",
                                 hovertemplate="after trial %{x}<br>hypervolume %{y:.4g}<extra></extra>",
                                 meta={"role": "hypervolume"}), row=row, col=1)
        fig.update_yaxes(range=fitted_range(ys), row=row, col=1)
        row += 1
    for i, objective in enumerate(objectives):
        xs, ys = best_so_far(objective, trials)
        name = objective["name"]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"best {name}",
                                 line={"shape": "hv", "color": SERIES[i % len(SERIES)]}, marker={"size": 4},
                                 hovertemplate=f"trial %{{x}}<br>{name} %{{y:{value_format(name)}}}<extra></extra>",
                                 meta={"role": "best", "objective": name}), row=row, col=1)
        fitted = fitted_range(ys)
        if fitted is not None:
            fig.update_yaxes(range=fitted, row=row, col=1)
        row += 1
    fig.update_xaxes(title_text="trial number", row=len(rows), col=1)
    fig.update_annotations(font={"size": 12})
    return _base_layout(fig, 140 + 150 * len(rows), showlegend=False, hovermode="x unified",
                        margin={"l": 60, "r": 20, "t": 30, "b": 50})


def _hypervolume_title(reference: Json | None) -> str:
    """The hypervolume row's title, with the reference point it is measured from (a
    hypervolume means nothing without it)."""
    if not reference:
        return "hypervolume of the Pareto front"
    point = ", ".join(f"{name} {float(value):,.6g}" for name, value in reference.items())
    return f"hypervolume of the Pareto front (reference point: {point})"


#: Share of the data's span added above and below a fitted axis.
RANGE_PAD = 0.08


def fitted_range(values: Sequence[float]) -> list[float] | None:
    """A y range around ``values`` (plotly's own autorange spans a whole unit around a flat
    line: 0.986 drawn on 0.5-1.5); a flat series gets a small band around its value."""
    finite = [float(v) for v in values if _finite(v)]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    pad = (high - low) * RANGE_PAD if high > low else max(abs(high) * 0.01, 1e-9)
    return [low - pad, high + pad]


# -- parameter importances -----------------------------------------------------------------
def importance_figure(importances: Json) -> go.Figure:
    """Horizontal bars: each parameter's importance for each objective (and for reaching
    the Pareto front, when the document has it), most important parameter on top."""
    series = [(s["objective"], s["importances"]) for s in importances.get("objectives", []) if s.get("importances")]
    if importances.get("pareto"):
        series.append(("Pareto front (all objectives)", importances["pareto"]))
    if not series:
        note = importances.get("note") or "not enough completed trials for importances yet"
        return _empty(note, height=240)
    params = sorted({p for _, values in series for p in values},
                    key=lambda p: sum(values.get(p, 0.0) for _, values in series))
    fig = go.Figure()
    for i, (label, values) in enumerate(series):
        fig.add_trace(go.Bar(y=params, x=[values.get(p, 0.0) for p in params], orientation="h", name=label,
                             marker_color=SERIES[i % len(SERIES)], meta={"role": "importance", "series": label},
                             hovertemplate=f"{label}<br>%{{y}}: %{{x:.3f}}<extra></extra>"))
    evaluator = importances.get("evaluator", "")
    return _base_layout(fig, 120 + 28 * len(params) * max(1, len(series)) // 2 + 40, barmode="group",
                        xaxis_title=f"importance ({evaluator}, {importances.get('n_trials', 0)} trials)",
                        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})


# -- one trial's per-layer configuration --------------------------------------------------
KNOB_ROWS = (("bits", "bitwidth (bits)"), ("kv_key", "KV cache: key bits (at the layer's k_proj)"),
             ("kv_value", "KV cache: value bits (at the layer's k_proj)"), ("prune", "pruning ratio"),
             ("merge", "merge coefficient"))
#: rows drawn as bit widths (one colour per width)
BIT_ROWS = {"bits": "bits", "kv_key": "key bits", "kv_value": "value bits"}


def _with_kv_rows(config: Json) -> Json:
    """``config`` with its KV pairs (``kv_bits``: layer -> [key, value]) as two rows of bits."""
    pairs = config.get("kv_bits") or {}
    if not pairs:
        return config
    return {**config, "kv_key": {n: int(p[0]) for n, p in pairs.items()},
            "kv_value": {n: int(p[1]) for n, p in pairs.items()}}


def layer_config_figure(layers: Sequence[Json], trial: Json) -> go.Figure:
    """Bars over the model's layers, in model order: bitwidth, pruning ratio and merge
    coefficients (one bar per checkpoint) of one trial's per-layer configuration, and a
    causal LM's KV-cache key and value bits at each attention layer's key projection. Rows
    appear for the knobs the trial has; a layer a knob did not touch has no bar."""
    config = _with_kv_rows(trial.get("config") or {})
    present = [(key, title) for key, title in KNOB_ROWS if config.get(key)]
    if not present:
        return _empty(f"trial {trial.get('number')} has no per-layer configuration", height=240)
    order = [str(layer["name"]) for layer in layers]
    info = {str(layer["name"]): layer for layer in layers}
    extra = sorted({name for key, _ in present for name in config[key] if name not in info})
    names = order + extra  # layers a config names that introspection did not list go last
    hover_layer = [f"{n} ({info[n]['kind']}, {info[n]['num_params']:,} params)" if n in info else n for n in names]

    fig = make_subplots(rows=len(present), cols=1, shared_xaxes=True, vertical_spacing=0.12 / len(present) + 0.04,
                        subplot_titles=[title for _, title in present])
    for row, (key, title) in enumerate(present, start=1):
        values = config[key]
        if key == "merge":
            width = max((len(v) for v in values.values()), default=0)
            for k in range(width):
                ys = [values[n][k] if n in values and k < len(values[n]) else None for n in names]
                fig.add_trace(go.Bar(x=names, y=ys, name=f"coefficient {k + 1}", customdata=hover_layer,
                                     marker_color=SERIES[(2 + k) % len(SERIES)],
                                     hovertemplate=f"%{{customdata}}<br>coefficient {k + 1}: %{{y:.3f}}<extra></extra>",
                                     meta={"role": "merge", "index": k}), row=row, col=1)
            fig.update_yaxes(range=[min(0.0, *(c for v in values.values() for c in v)) * 1.1,
                                    max(1.0, *(c for v in values.values() for c in v)) * 1.1], row=row, col=1)
            continue
        ys = [values.get(n) for n in names]
        if key in BIT_ROWS:
            fig.add_trace(go.Bar(x=names, y=ys, name=BIT_ROWS[key], marker_color=[_bits_color(b) for b in ys],
                                 text=[str(b) if b is not None else "" for b in ys], textposition="outside",
                                 customdata=hover_layer,
                                 hovertemplate=f"%{{customdata}}<br>%{{y}} {BIT_ROWS[key]}<extra></extra>",
                                 meta={"role": key}), row=row, col=1)
            fig.update_yaxes(range=[0, 19], tickvals=[2, 4, 8, 16], row=row, col=1)
        else:
            fig.add_trace(go.Bar(x=names, y=ys, name="prune ratio", marker_color="#db2777", customdata=hover_layer,
                                 text=[f"{r:.0%}" if r is not None else "" for r in ys], textposition="outside",
                                 hovertemplate="%{customdata}<br>pruned %{y:.1%}<extra></extra>",
                                 meta={"role": "prune"}), row=row, col=1)
            fig.update_yaxes(range=[0, 1.15], tickvals=[0, 0.25, 0.5, 0.75, 1], tickformat=".0%", row=row, col=1)
        untouched = [n for n, y in zip(names, ys) if y is None]
        if untouched and key not in ("kv_key", "kv_value"):  # say so, rather than leave a gap that reads as zero
            fig.add_trace(go.Scatter(x=untouched, y=[0] * len(untouched), mode="text", text=["not searched"] * len(untouched),
                                     textposition="top center", textfont={"color": "#9ca3af", "size": 11},
                                     hoverinfo="skip", showlegend=False, meta={"role": "unset", "knob": key}),
                          row=row, col=1)
    ticks = [f"{n}<br><span style='font-size:10px;color:#6b7280'>{info[n]['kind']}</span>" if n in info else n for n in names]
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=names, tickvals=names, ticktext=ticks,
                     tickangle=-30 if len(names) > 8 else 0)
    fig.update_xaxes(title_text="layer (model order)", row=len(present), col=1)
    fig.update_annotations(font={"size": 12})
    return _base_layout(fig, 120 + 190 * len(present), showlegend=bool(config.get("merge")), bargap=0.25,
                        margin={"l": 60, "r": 20, "t": 30, "b": 60}, meta={"trial_number": trial.get("number")})


def _bits_color(bits: Any) -> str:
    if bits is None:
        return "rgba(0,0,0,0)"  # no bar there anyway
    # fewer bits: warmer; fp16 (16) keeps the cool end
    scale = {2: "#b91c1c", 3: "#dc2626", 4: "#ea580c", 5: "#f59e0b", 6: "#eab308", 7: "#84cc16", 8: "#16a34a"}
    return scale.get(int(bits), "#2563eb")


def rung_curve_figure(trial: Json) -> go.Figure:
    """A trial's intermediate curve: the rung metric at each rung step (fine-tune steps or
    validation samples scored: Optuna's intermediate values), with the step where a pruner
    stopped it marked."""
    curve = trial.get("intermediate_values") or {}
    if not curve:
        return _empty("no rungs: this study has no pruner", height=260)
    steps = sorted(int(s) for s in curve)
    values = [curve[str(s)] if str(s) in curve else curve[s] for s in steps]
    fig = go.Figure(go.Scatter(x=steps, y=values, mode="lines+markers", name="rung metric",
                               line={"color": SERIES[0]},
                               hovertemplate="step %{x}<br>%{y:.4g}<extra></extra>"))
    stopped = trial.get("stopped_at")
    if stopped is not None:
        fig.add_trace(go.Scatter(x=[stopped], y=[values[steps.index(int(stopped))]] if int(stopped) in steps else [None],
                                 mode="markers", name="stopped here", marker={"color": INFEASIBLE_COLOR, "size": 12,
                                                                              "symbol": "x"}))
    return _base_layout(fig, 260, xaxis_title=trial.get("rung_unit") or "fine-tune step", yaxis_title="rung metric",
                        title={"text": "pruned at a rung" if stopped is not None else "intermediate values"})
