"""One trial, one deployment (issue 24), re-measured: a study in its deployment mode, the share
of its trials whose latency is ``measured`` (goal: 100% in runtime mode), its front against
uniform fp32 / int8 / int4, and every front point exported, reloaded and re-timed (goal:
bytes exact, latency within 10%).

    OMP_NUM_THREADS=1 python benchmarks/deploy_front.py --spec studies/digits_cnn.yaml --trials 40
    python benchmarks/deploy_front.py --gpu-task minilm --trials 100 --machine h200   # the lent GPU

``--gpu-task`` takes the GPU study's spec (``gpu_study.study_spec``: bits {4, 8, 16} and
activation bits {8, 16} on the Linear layers, the task's pruning, 1,000 validation
sentences, latency batch 32) with the sensitivity warm start, and enqueues uniform
bf16 / fp8 W8A8 / int8 / int4 before the sampler's trials. Trials run in this process (one
worker: what the goals ask is that each point is the model export gives back, not throughput).

Writes ``benchmarks/results/deploy-front-<task>-<mode>-<machine>.{json,md}``; ``--report
JSON`` writes the md again and the plotly figure (``.html``: the front and the uniform
baselines, bytes against latency, coloured by quality) beside it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from paretoml.objectives import measure
from paretoml.objectives.deploy import load_deployment
from paretoml.objectives.deploy.export import weights_file_bytes
from paretoml.search_space.space import TrialConfig
from paretoml.search_space.trial_attrs import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    DROPPED_CHOICES_ATTR,
    ERROR_ATTR,
    KERNELS_ATTR,
    PROVENANCE_ATTR,
)
from paretoml.service.executors import create_executor
from paretoml.service.export import export_completed
from paretoml.service.runner import StudyRunner, build_evaluator
from paretoml.service.spec import load_spec, parse_spec
from paretoml.service.storage import open_durable_storage

from _machine import machine
from gpu_study import BASELINES, OVERRIDES, enqueue_from, study_spec

RESULTS = Path(__file__).parent / "results"


def _row(label: str, trial: FrozenTrial | None, names: list[str], values: dict[str, float],
         kernels: dict[str, dict]) -> dict:
    return {"label": label, "trial": None if trial is None else trial.number,
            **{n: values.get(n) for n in names},
            "kernels": {n: k["kernel"] for n, k in kernels.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="studies/digits_cnn.yaml")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--mode", default=None, help="override deploy.mode")
    parser.add_argument("--machine", default="dev-2cores")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the json and md")
    parser.add_argument("--gpu-task", default=None, help="minilm | mpnet: the GPU study's spec instead of --spec")
    parser.add_argument("--device", default="cuda", help="with --gpu-task: measure.device (cpu: a dry run)")
    parser.add_argument("--task-options", default="{}", help="with --gpu-task: JSON merged into task_options")
    parser.add_argument("--report", type=Path, default=None, help="a result JSON: write its md and html, run nothing")
    args = parser.parse_args()
    if args.report:
        result = json.loads(args.report.read_text())
        names = [n for n in result["baselines"][0] if n not in ("label", "trial", "kernels")]
        args.report.with_suffix(".md").write_text(report(result, names))
        args.report.with_suffix(".html").write_text(figure(result, names))
        return
    uniform = [b for b in BASELINES if b[1]["kind"] == "uniform"] if args.gpu_task else None
    if args.gpu_task:
        OVERRIDES.update(device=args.device, task_options=json.loads(args.task_options))
        spec = parse_spec(study_spec(args.gpu_task, args.trials, "tpe", 0, warm_start=True))
        args.spec = f"gpu_study.study_spec({args.gpu_task!r})"
    else:
        spec = load_spec(args.spec)
    update: dict = {"n_trials": args.trials}
    if args.mode:
        update["deploy"] = spec.deploy.model_copy(update={"mode": args.mode})
    spec = spec.model_copy(update=update)
    names = spec.objective_names
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/front.db"
        t0 = time.perf_counter()
        with create_executor("inprocess", spec) as executor:
            runner = StudyRunner.create(spec, open_durable_storage(url), "front", executor)
            if uniform:
                enqueue_from(runner, uniform)
            runner.run()
        study_s = time.perf_counter() - t0
        study = optuna.load_study(study_name="front", storage=url)
        trials = study.trials
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        failed = [t for t in trials if t.state == TrialState.FAIL]
        measured = [t for t in done if t.user_attrs[PROVENANCE_ATTR]["latency_ms"]["how"] == "measured"]
        evaluator = build_evaluator(spec)
        reference = evaluator.reference(names)
        rows = [_row("uncompressed (reference)", None, names, reference.values, reference.attrs["kernels"])]
        rows += [_row(t.user_attrs[BASELINE_ATTR], t, names, dict(zip(names, t.values)), t.user_attrs[KERNELS_ATTR])
                 for t in done if BASELINE_ATTR in t.user_attrs]
        front = sorted(study.best_trials, key=lambda t: t.values[names.index("model_bytes")])
        trips = []
        for trial in front:
            values = dict(zip(names, trial.values))
            try:  # one point that does not reload is a finding, not the end of the run
                trips.append(_round_trip(spec, trial, names, evaluator, Path(tmp) / f"t{trial.number}"))
            except Exception as exc:
                trips.append({**_row(f"front #{trial.number}", trial, names, values, trial.user_attrs[KERNELS_ATTR]),
                              "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
    result = {
        "spec": args.spec, "deploy": spec.deploy.model_dump(), "machine": machine(), "trials": len(trials),
        "complete": len(done), "failed": len(failed), "measured": len(measured),
        "measured_share": len(measured) / max(1, len(done)), "study_s": study_s,
        "dropped_choices": study.user_attrs.get(DROPPED_CHOICES_ATTR),
        "errors": sorted({str(t.user_attrs.get(ERROR_ATTR, "")).strip().splitlines()[-1] for t in failed}),
        "baselines": rows, "front": trips,
    }
    stem = f"deploy-front-{spec.task}-{spec.deploy.mode}-{args.machine}"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.results / f"{stem}.md").write_text(report(result, names))
    print(report(result, names))


def _round_trip(spec, trial: FrozenTrial, names: list[str], evaluator, out: Path) -> dict:
    """Export ``trial``, load it on the device it ran on, and time it again."""
    export_completed(spec, trial, "front", out)
    size, header = weights_file_bytes(out)
    loaded = load_deployment(out, evaluator.device)
    example = evaluator.data.latency_example(evaluator.settings.latency.batch_size)
    again = measure.latency_ms(loaded.model, example, evaluator.settings.latency)
    values = dict(zip(names, trial.values))
    config = TrialConfig.from_dict(trial.user_attrs[CONFIG_ATTR])
    return {
        **_row(f"front #{trial.number}", trial, names, values, trial.user_attrs[KERNELS_ATTR]),
        "file_bytes_less_header": size - header,
        "bytes_exact": size - header == values["model_bytes"],
        "same_kernels": {p.name: p.kernel for p in loaded.layers}
        == {n: k["kernel"] for n, k in trial.user_attrs[KERNELS_ATTR].items()},
        "retimed_ms": again, "retime_ratio": again / values["latency_ms"],
        "config_bits": config.bits, "config_prune": config.prune,
    }


def _counts(kernels: dict[str, str]) -> str:
    """Layers per kernel (``36x fp8-rowwise, 1x bf16``), widest share first; digits' few
    layers by name."""
    if len(kernels) <= 6:
        return ", ".join(f"{k}:{v}" for k, v in kernels.items())
    return ", ".join(f"{n}x {k}" for k, n in Counter(kernels.values()).most_common())


def report(result: dict, names: list[str]) -> str:
    lines = [f"# {result['spec']}: deploy {result['deploy']}", "",
             f"machine: {result['machine']}", "",
             f"{result['complete']} of {result['trials']} trials complete, {result['failed']} failed; "
             f"latency `measured` in {result['measured']} of {result['complete']} "
             f"({100 * result['measured_share']:.0f}%); study {result['study_s']:.0f} s", ""]
    if result["dropped_choices"]:
        dropped = "; ".join(f"{k} {v}" for k, v in result["dropped_choices"]["dropped"].items())
        lines += [f"choices not offered (no kernel of their own format on {result['dropped_choices']['device']}): "
                  f"{dropped}", ""]
    if result["errors"]:
        lines += ["errors: " + "; ".join(result["errors"]), ""]
    head = " | ".join(names)
    lines += ["## Baselines", "", f"| point | {head} | kernels |", "|---" * (len(names) + 2) + "|"]
    for row in result["baselines"]:
        cells = " | ".join(f"{row[n]:.4g}" if row[n] is not None else "" for n in names)
        lines.append(f"| {row['label']} | {cells} | {_counts(row['kernels'])} |")
    lines += ["", "## Front, exported and reloaded", "",
              f"| point | {head} | file less header | bytes exact | same kernels | re-timed ms | ratio | kernels | "
              "structured prune |", "|---" * (len(names) + 8) + "|"]
    for row in result["front"]:
        cells = " | ".join(f"{row[n]:.4g}" for n in names)
        if "error" in row:
            lines.append(f"| {row['label']} | {cells} | export or reload failed: {row['error']} |")
            continue
        kernels = _counts(row["kernels"])
        pruned = ", ".join(f"{k}:{v:g}" for k, v in row["config_prune"].items() if v) or "-"
        lines.append(f"| {row['label']} | {cells} | {row['file_bytes_less_header']} | {row['bytes_exact']} | "
                     f"{row['same_kernels']} | {row['retimed_ms']:.4g} | {row['retime_ratio']:.2f} | {kernels} | "
                     f"{pruned} |")
    within = sum(abs(r["retime_ratio"] - 1) <= 0.10 for r in result["front"] if "retime_ratio" in r)
    lines += ["", f"bytes exact for {sum(r.get('bytes_exact', False) for r in result['front'])} of {len(result['front'])} "
              f"front points; re-timed within 10% for {within} of {len(result['front'])}", ""]
    return "\n".join(lines)


def figure(result: dict, names: list[str]) -> str:
    """Bytes against latency: the front's points (coloured by the first objective, the quality)
    and the uniform baselines, labelled; a self-contained HTML page."""
    import plotly.graph_objects as go

    quality = names[0]
    front = [r for r in result["front"] if "error" not in r]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[r["model_bytes"] / 1e6 for r in front], y=[r["latency_ms"] for r in front], mode="markers",
        name="front", marker={"color": [r[quality] for r in front], "colorscale": "Viridis", "size": 9,
                              "colorbar": {"title": quality}},
        text=[f"{r['label']}: {quality} {r[quality]:.4f}, {_counts(r['kernels'])}" for r in front]))
    base = result["baselines"]
    fig.add_trace(go.Scatter(
        x=[r["model_bytes"] / 1e6 for r in base], y=[r["latency_ms"] for r in base], mode="markers+text",
        name="baselines", marker={"symbol": "diamond", "size": 12, "color": "firebrick"},
        text=[f"{r['label']} ({quality} {r[quality]:.3f})" for r in base], textposition="top center"))
    fig.update_layout(title=f"{result['spec']}, deploy {result['deploy']['mode']}: {result['machine']}",
                      xaxis_title="model_bytes (MB, as deployed)", yaxis_title="latency_ms (measured)",
                      template="plotly_white")
    return fig.to_html(include_plotlyjs="cdn", full_html=True)


if __name__ == "__main__":
    main()
