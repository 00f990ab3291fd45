"""Search efficiency: hypervolume against trials for each method, over several seeds.

Problems (all minimised as losses, maximised objectives negated; fixed reference points):
  zdt1          ZDT1, 10 variables, reference (1.1, 11)
  dtlz2         DTLZ2 with 2 objectives, 8 variables, reference (1.1, 1.1)
  digits-cnn    per-layer bits {2,3,4,6,8,16} + unstructured pruning [0, 0.9] of the digits
                CNN; (accuracy, packed bytes), reference (0, 2 x fp32 bytes)
  digits-merge  per-layer task-arithmetic coefficients of two specialists; accuracy
                (one objective: hypervolume is the best accuracy above 0)
Methods: random, tpe, gp, nsga2, zeroth-order, xgboost, and xgboost+sens (sensitivity warm start, model
problems only).

  python benchmarks/search_efficiency.py run --out results.json [--trials 300] [--seeds 5] [--jobs N]
  python benchmarks/search_efficiency.py report results.json [--html fig.html]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import warnings
from typing import Any

import numpy as np
import optuna

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)

METHODS = ["random", "tpe", "gp", "nsga2", "zeroth-order", "xgboost", "xgboost+sens"]
PROBLEMS = ["zdt1", "dtlz2", "digits-cnn", "digits-merge"]
MODEL_PROBLEMS = {"digits-cnn", "digits-merge"}
_EVALUATORS: dict[str, Any] = {}


def _evaluator(task: str) -> Any:
    if task not in _EVALUATORS:
        from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
        from paretoml.objectives.tasks.registry import create_task

        _EVALUATORS[task] = TrialEvaluator(create_task(task), MeasureSettings())
    return _EVALUATORS[task]


def problem(name: str) -> tuple[list[str], np.ndarray, Any, list[dict[str, Any]]]:
    """Directions, reference point (in loss space), objective, warm-start params."""
    if name == "zdt1":
        def zdt1(t: optuna.Trial) -> tuple[float, float]:
            x = np.array([t.suggest_float(f"x{i}", 0, 1) for i in range(10)])
            g = 1 + 9 * x[1:].mean()
            return float(x[0]), float(g * (1 - np.sqrt(x[0] / g)))
        return ["minimize"] * 2, np.array([1.1, 11.0]), zdt1, []
    if name == "dtlz2":
        def dtlz2(t: optuna.Trial) -> tuple[float, float]:
            x = np.array([t.suggest_float(f"x{i}", 0, 1) for i in range(8)])
            g = float(np.sum((x[1:] - 0.5) ** 2))
            return (1 + g) * np.cos(x[0] * np.pi / 2), (1 + g) * np.sin(x[0] * np.pi / 2)
        return ["minimize"] * 2, np.array([1.1, 1.1]), dtlz2, []

    from paretoml.search_space.knobs import BitwidthKnob, MergeKnob, PruneKnob
    from paretoml.search_space.space import JointSpace
    from paretoml.surrogates.sensitivity import measure_sensitivity, warm_start_allocations

    ev = _evaluator(name)
    if name == "digits-cnn":
        space = JointSpace([BitwidthKnob(choices=[2, 3, 4, 6, 8, 16]), PruneKnob(high=0.9)], ev.layers)
        fp32 = ev.reference(["model_bytes"]).values["model_bytes"]

        def cnn(t: optuna.Trial) -> tuple[float, float]:
            v = ev.evaluate(space.suggest(t), ["accuracy", "model_bytes"]).values
            return v["accuracy"], v["model_bytes"]
        sens = measure_sensitivity(ev, space.bits_layers, [2, 3, 4, 6, 8, 16])
        start = space.uniform_params(prune=0.0)
        warm = [space.with_layer_bits(start, b) for b in warm_start_allocations(sens, ev.layers, [0.15, 0.25, 0.35, 0.5, 0.7])]
        return ["maximize", "minimize"], np.array([0.0, 2 * fp32]), cnn, warm
    space = JointSpace([MergeKnob()], ev.layers, n_checkpoints=ev.n_checkpoints)

    def merge(t: optuna.Trial) -> float:
        return ev.evaluate(space.suggest(t), ["accuracy"]).values["accuracy"]
    return ["maximize"], np.array([0.0]), merge, []


def hypervolume_curve(values: np.ndarray, signs: np.ndarray, reference: np.ndarray) -> list[float]:
    from optuna._hypervolume import compute_hypervolume

    from paretoml.surrogates.pareto import non_dominated

    losses = values * signs
    curve = []
    for n in range(1, len(losses) + 1):
        pts = losses[:n]
        pts = pts[np.all(pts < reference, axis=1)]
        if not len(pts):
            curve.append(0.0)
        elif pts.shape[1] == 1:
            curve.append(float(reference[0] - pts.min()))
        else:
            curve.append(float(compute_hypervolume(pts[non_dominated(pts)], reference)))
    return curve


def run_one(job: tuple[str, str, int, int]) -> dict[str, Any]:
    name, method, seed, n_trials = job
    from paretoml.surrogates.registry import create_sampler

    directions, reference, objective, warm = problem(name)
    sampler = create_sampler("xgboost" if method == "xgboost+sens" else method, {}, seed=seed)
    study = optuna.create_study(directions=directions, sampler=sampler)
    if method == "xgboost+sens":
        for params in warm:
            study.enqueue_trial(params)
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    wall = time.perf_counter() - start
    values = np.array([t.values for t in study.trials if t.values is not None], dtype=float)
    from paretoml.surrogates.pareto import loss_signs

    signs = loss_signs(directions)
    return {"problem": name, "method": method, "seed": seed, "wall_s": wall,
            "hv": hypervolume_curve(values, signs, reference)}


def cmd_run(args: argparse.Namespace) -> None:
    jobs = [(p, m, s, args.trials) for p in args.problems for m in args.methods for s in range(args.seeds)
            if m != "xgboost+sens" or p in MODEL_PROBLEMS]
    jobs.sort(key=lambda j: j[1] != "gp")  # the slowest first
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        results = []
        for result in pool.imap_unordered(run_one, jobs):
            results.append(result)
            print(f"{result['problem']:13s} {result['method']:13s} seed {result['seed']}: "
                  f"hv {result['hv'][-1]:.4f} in {result['wall_s']:.0f} s", flush=True)
            with open(args.out, "w") as handle:  # after every run: a cut-off run keeps what finished
                json.dump({"trials": args.trials, "seeds": args.seeds, "results": results}, handle)


def cmd_report(args: argparse.Namespace) -> None:
    data = json.load(open(args.results))
    results = data["results"]
    checkpoints = [c for c in (10, 20, 30, 60, 100, 200, 300) if c <= data["trials"]]
    print(f"{data['seeds']} seeds, {data['trials']} trials; median hypervolume (spread: min-max)\n")
    for name in PROBLEMS:
        rows = [r for r in results if r["problem"] == name]
        if not rows:
            continue
        print(f"### {name}\n")
        print("| method | " + " | ".join(f"@{c}" for c in checkpoints) + " | trials to best-Optuna@max | "
              "trials to random@max | wall s (median) |")
        print("|---|" + "---:|" * (len(checkpoints) + 3))
        curves = {m: np.array([r["hv"] for r in rows if r["method"] == m]) for m in METHODS
                  if any(r["method"] == m for r in rows)}
        medians = {m: np.median(c, axis=0) for m, c in curves.items()}
        optuna_best = max((medians[m][-1] for m in ("tpe", "gp", "nsga2") if m in medians), default=float("nan"))
        random_best = medians["random"][-1] if "random" in medians else float("nan")
        for method, curve in curves.items():
            med = medians[method]
            cells = [f"{med[c - 1]:.4g} ({curve[:, c - 1].min():.4g}-{curve[:, c - 1].max():.4g})" for c in checkpoints]
            reach = [int(np.argmax(med >= target)) + 1 if np.any(med >= target) else None
                     for target in (optuna_best, random_best)]
            walls = np.median([r["wall_s"] for r in rows if r["method"] == method])
            print(f"| {method} | " + " | ".join(cells) + " | " +
                  " | ".join(str(v) if v else f">{data['trials']}" for v in reach) + f" | {walls:.0f} |")
        print()
    if args.html:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        names = [p for p in PROBLEMS if any(r["problem"] == p for r in results)]
        fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
        for col, name in enumerate(names, start=1):
            for method in METHODS:
                curve = np.array([r["hv"] for r in results if r["problem"] == name and r["method"] == method])
                if not len(curve):
                    continue
                x = list(range(1, curve.shape[1] + 1))
                fig.add_trace(go.Scatter(x=x, y=np.median(curve, axis=0), name=method, legendgroup=method,
                                         showlegend=col == 1), row=1, col=col)
        fig.update_layout(title="Hypervolume against trials (median over seeds)", height=450, width=400 * len(names))
        fig.write_html(args.html, include_plotlyjs="cdn" if args.cdn else True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--out", required=True)
    run.add_argument("--trials", type=int, default=300)
    run.add_argument("--seeds", type=int, default=5)
    run.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    run.add_argument("--problems", nargs="+", default=PROBLEMS)
    run.add_argument("--methods", nargs="+", default=METHODS)
    report = sub.add_parser("report")
    report.add_argument("results")
    report.add_argument("--html")
    report.add_argument("--cdn", action="store_true", help="link plotly.js instead of embedding it")
    args = parser.parse_args()
    cmd_run(args) if args.command == "run" else cmd_report(args)


if __name__ == "__main__":
    main()
