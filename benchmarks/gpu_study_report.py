"""The report of ``gpu_study.py``: tables (Markdown) and the figure (HTML) from its JSON.

    python benchmarks/gpu_study.py report ALL.json [--html FILE] [--md FILE]

Hypervolume against trials is computed here, on objectives normalised over every trial of
every run (``surrogates/pareto.py``'s hypervolume).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

OBJECTIVES = ["fidelity", "model_bytes", "latency_ms"]
DIRECTIONS = ["maximize", "minimize", "minimize"]
#: the trial steps of a scaling row (seconds, from each trial's timings)
STEPS = ("compress_s", "quantize_s", "deploy_s", "score_s", "latency_s", "measure_s", "duration_s")


def step_medians(trials: list[dict[str, Any]]) -> dict[str, float]:
    """Median seconds of each step of the completed trials (build, deployable model, scoring,
    latency timing including its wait for the GPU, all of measuring, the whole trial)."""
    done = [t for t in trials if t["state"] == "COMPLETE"]
    out = {}
    for step in STEPS:
        values = [t.get("duration_s") if step == "duration_s" else t.get("timings", {}).get(step) for t in done]
        values = [v for v in values if v is not None]
        if values:
            out[step.removesuffix("_s")] = float(np.median(values))
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def losses(values: list[dict[str, float]], low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Objectives as losses in [0, 1] over the range every run reached (1 = worst seen)."""
    raw = np.array([[(-v[n] if d == "maximize" else v[n]) for n, d in zip(OBJECTIVES, DIRECTIONS)] for v in values])
    return (raw - low) / np.where(high > low, high - low, 1.0)


def hv_curve(points: np.ndarray) -> list[float]:
    from paretoml.surrogates.pareto import hypervolume_curve

    return hypervolume_curve(points, np.full(points.shape[1], 1.1))


def cmd_report(args: argparse.Namespace) -> None:
    data = json.loads(Path(args.json).read_text())
    lines = [f"# GPU study: {data['task']}", "", f"Machine: {data['machine']}", ""]
    if data.get("scaling"):
        lines += ["## Workers sharing one GPU", "",
                  f"GPU busy: {data.get('gpu_busy_source')}, mean of 0.1 s readings over the trial phase.", "",
                  "Median seconds of a trial's steps: build (copy, prune), quantize (runs recorded before "
                  "it was timed leave it empty), deployable model (kernels, CUDA graph), scoring the split, "
                  "latency (its wait for the timing lock included), and the whole trial.", "",
                  "| workers | run | GPU share each | trials | trial phase s | trials/hour | GPU busy | start-up s "
                  "(Ray, model load, reference) | build | quantize | deploy | score | latency | trial |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in data["scaling"]:
            done = [t for t in r["trials"] if t["state"] == "COMPLETE"]
            med = step_medians(r["trials"])
            cells = " | ".join(f"{med[k]:.3f}" if k in med else "" for k in
                               ("compress", "quantize", "deploy", "score", "latency", "duration"))
            lines.append(f"| {r['workers']} | {r.get('tag') or ''} | {r['gpu_share']:.3g} | {len(done)} | "
                         f"{r['trials_s']:.1f} | {r['trials_per_hour']:.0f} | {_pct(r.get('gpu_busy'))} | "
                         f"{r['start_s']:.1f} | {cells} |")
        lines.append("")
    runs = data.get("samplers", [])
    every = [t["values"] for r in runs for t in r["trials"] if t.get("values")]
    every += [t["values"] for t in data.get("baselines", []) if t.get("values")]
    if every:
        raw = np.array([[(-v[n] if d == "maximize" else v[n]) for n, d in zip(OBJECTIVES, DIRECTIONS)] for v in every])
        low, high = raw.min(axis=0), raw.max(axis=0)
    if data.get("baselines"):
        lines += ["## Baselines", "", "| configuration | fidelity | MB | latency ms | latency | kernels |",
                  "|---|---:|---:|---:|---|---|"]
        for t in data["baselines"]:
            v = t.get("values")
            if not v:
                lines.append(f"| {t['baseline']} | {t['state']} | | | | |")
                continue
            kern = ", ".join(f"{n}x {k}" for k, n in sorted(t.get("kernels", {}).items()))
            lines.append(f"| {t['baseline']} | {v['fidelity']:.4f} | {v['model_bytes'] / 1e6:.2f} | "
                         f"{v['latency_ms']:.3f} | {t.get('latency_how')} | {kern} |")
        lines.append("")
    curves: dict[str, list[list[float]]] = {}
    seeds: dict[str, list[int]] = {}
    if runs:
        checkpoints = [10, 30, 60, 100, 150, 200]
        last = "HV at the last trial"
        lines += ["## Samplers", "",
                  "Hypervolume of the normalised losses (each objective scaled to [0, 1] over every trial "
                  "of every run and the baselines; reference point 1.1), by trials completed, in trial-number order.",
                  "Runs read from a study's storage (cut short by the device time) have no suggestion times.",
                  "", "| sampler | seed | " + " | ".join(f"HV@{c}" for c in checkpoints)
                  + f" | {last} | suggestion ms (median, last 50) | trials | wall s |",
                  "|---|---:|" + "---:|" * len(checkpoints) + "---:|---:|---:|---:|"]
        for r in runs:
            done = [t for t in r["trials"] if t.get("values")]
            done.sort(key=lambda t: t["number"])
            curve = hv_curve(losses([t["values"] for t in done], low, high)) if done else []
            curves.setdefault(r["sampler"], []).append(curve)
            seeds.setdefault(r["sampler"], []).append(r["seed"])
            sug = [t["suggest_s"] for t in r["trials"] if t.get("suggest_s") is not None][-50:]
            cells = [f"{curve[c - 1]:.4f}" if len(curve) >= c else "" for c in checkpoints]
            final = f"{curve[-1]:.4f}" if curve else ""
            suggestion = f"{1e3 * float(np.median(sug)):.0f}" if sug else ""
            lines.append(f"| {r['sampler']} | {r['seed']} | " + " | ".join(cells)
                         + f" | {final} | {suggestion} | {len(done)} | {r['trials_s']:.0f} |")
        lines.append("")
        lines += _sampler_summary(curves, seeds, checkpoints)
        lines += _front_against_ilp(runs, data.get("baselines", []))
    text = "\n".join(lines)
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")
    if args.html and (runs or data.get("baselines")):
        _figure(data, curves, low, high, args.html)


def _sampler_summary(curves: dict[str, list[list[float]]], seeds: dict[str, list[int]],
                     checkpoints: list[int]) -> list[str]:
    """Each run's hypervolume at the checkpoints, median over seeds, and the warm-started
    xgboost's goal: the trial where it reaches the best other run's final hypervolume (the
    best cold-started one, and the best of every other run, warm-started ones included)."""
    lines = ["| run | seeds | " + " | ".join(f"HV@{c} (median)" for c in checkpoints) + " |",
             "|---|---:|" + "---:|" * len(checkpoints)]
    for label, runs in sorted(curves.items()):
        cells = []
        for c in checkpoints:
            at = [curve[c - 1] for curve in runs if len(curve) >= c]
            cells.append(f"{float(np.median(at)):.4f}" if len(at) == len(runs) else "")
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    lines.append("")
    xgb = [k for k in curves if k == "xgboost+warm"] or [k for k in curves if k == "xgboost"]  # "xgboost": old files
    for pool, what in ((lambda k: "+warm" not in k and k not in xgb, "cold-started"),
                       (lambda k: k not in xgb, "any other")):
        finals = [(c[-1], k) for k, cs in curves.items() if pool(k) for c in cs if c]
        if not finals or not xgb:
            continue
        best, who = max(finals)
        for label in xgb:
            for seed, curve in zip(seeds[label], curves[label]):
                reach = next((i + 1 for i, h in enumerate(curve) if h >= best), None)
                lines.append(f"- {label} (seed {seed}) reaches the best {what} run's final hypervolume "
                             f"({best:.4f}, {who}) at trial {reach if reach else f'> {len(curve)}'} (goal <= 60).")
    lines.append("")
    return lines


def _front_against_ilp(runs: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> list[str]:
    """The best fidelity each run found at no more bytes than each sensitivity-ILP
    configuration (median over seeds, with the range), beside the ILP's own."""
    ilp = [b for b in baselines if b.get("values") and str(b.get("baseline", "")).startswith("ILP")]
    if not ilp or not runs:
        return []
    labels = sorted({r["sampler"] for r in runs})
    lines = ["## Front against the sensitivity ILP at the same bytes", "",
             "Best fidelity a run found at no more packed bytes than the ILP's configuration "
             "(median over seeds; min-max where more than one).", "",
             "| budget | MB | ILP fidelity | " + " | ".join(labels) + " |",
             "|---|---:|---:|" + "---:|" * len(labels)]
    for b in ilp:
        cap = b["values"]["model_bytes"]
        cells = []
        for label in labels:
            best = [max((t["values"]["fidelity"] for t in r["trials"]
                         if t.get("values") and t["values"]["model_bytes"] <= cap), default=float("nan"))
                    for r in runs if r["sampler"] == label]
            found = [v for v in best if not np.isnan(v)]
            if len(found) < len(best):  # some seed found nothing this small
                cells.append(f"none in {len(best) - len(found)} of {len(best)}" if found else "none")
                continue
            cell = f"{float(np.median(best)):.4f}"
            if len(best) > 1:
                cell += f" ({min(best):.4f}-{max(best):.4f})"
            cells.append(cell)
        lines.append(f"| {b['baseline']} | {cap / 1e6:.2f} | {b['values']['fidelity']:.4f} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _figure(data: dict[str, Any], curves: dict[str, list[list[float]]], low: np.ndarray, high: np.ndarray,
            path: str) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("hypervolume against trials", "fidelity against MB"))
    for r in data.get("samplers", []):
        done = sorted((t for t in r["trials"] if t.get("values")), key=lambda t: t["number"])
        curve = hv_curve(losses([t["values"] for t in done], low, high)) if done else []
        fig.add_trace(go.Scatter(y=curve, x=list(range(1, len(curve) + 1)), mode="lines",
                                 name=f"{r['sampler']} (seed {r['seed']})", legendgroup=r["sampler"]), row=1, col=1)
    for r in data.get("samplers", []):
        done = [t for t in r["trials"] if t.get("values")]
        fig.add_trace(go.Scatter(x=[t["values"]["model_bytes"] / 1e6 for t in done],
                                 y=[t["values"]["fidelity"] for t in done], mode="markers", marker={"size": 4},
                                 name=f"{r['sampler']} trials", legendgroup=r["sampler"], showlegend=False,
                                 text=[f"#{t['number']} {t['values']['latency_ms']:.3f} ms" for t in done]),
                      row=1, col=2)
    base = [t for t in data.get("baselines", []) if t.get("values")]
    fig.add_trace(go.Scatter(x=[t["values"]["model_bytes"] / 1e6 for t in base], y=[t["values"]["fidelity"] for t in base],
                             mode="markers+text", text=[t["baseline"] for t in base], textposition="top center",
                             marker={"size": 10, "symbol": "x", "color": "black"}, name="baselines"), row=1, col=2)
    fig.update_xaxes(title_text="trials completed", row=1, col=1)
    fig.update_xaxes(title_text="packed MB", row=1, col=2)
    fig.update_yaxes(title_text="hypervolume (normalised)", row=1, col=1)
    fig.update_yaxes(title_text="fidelity", row=1, col=2)
    fig.update_layout(title=f"GPU study: {data['task']} ({data['machine'].split(';')[0]})", height=520, width=1200)
    fig.write_html(path, include_plotlyjs="cdn")
