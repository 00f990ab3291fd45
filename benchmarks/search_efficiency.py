"""Search efficiency: hypervolume against trials for each method, over several seeds.

Hypervolume is computed on normalised losses (maximised objectives negated, each objective
divided by a fixed per-problem scale) against a fixed reference point in that space:
  zdt1          ZDT1, 10 variables; scale (1, 1), reference (1.1, 11)
  dtlz2         DTLZ2 with 2 objectives, 8 variables; scale (1, 1), reference (1.1, 1.1)
  digits-cnn    per-layer bits {2,3,4,6,8,16} + unstructured pruning [0, 0.9] of the digits
                CNN; (accuracy, packed bytes / fp32 model bytes), reference (accuracy 0.5,
                bytes 0.125 of fp32): only models at least 8x smaller than fp32 (uniform 4-bit
                is 0.129) that keep at least half their answers right (5x chance) count.
                A second reference, (accuracy 0.9, bytes 0.25), is reported as a check.
  digits-merge  per-layer task-arithmetic coefficients of two specialists; accuracy (one
                objective: hypervolume is the best accuracy, reference 0)
  quantune-48   every knob categorical (bits, granularity, scheme, clipping of a weight-only
                PTQ of the digits CNN): 48 configurations measured once
                (benchmarks/measure_tables.py); accuracy, one objective (hypervolume is the
                best accuracy, reference 0); also reported: trials to within 0.5 pp of the best
  bits-table    mixed: per-layer bits {2,3,4,6,8} (categorical) and per-layer pruning in tenths
                0..8 (integer) of the digits CNN over its measured sensitivity table (additive
                accuracy drops, measured packed bytes); scale, reference as digits-cnn
Methods: random, tpe, gp, nsga2, zeroth-order (problems whose knobs are all continuous),
xgboost, and xgboost+sens (sensitivity warm start: problems with bitwidth knobs).
GP runs ``--gp-trials`` trials (its suggestion cost grows to seconds per trial).

Every run stores its per-trial objective values and sampler times, so the report recomputes
hypervolume from the values (a changed reference needs no rerun).

  python benchmarks/search_efficiency.py run --out results.json [--trials 300] [--gp-trials 150]
      [--seeds 5] [--jobs N] [--resume]
  python benchmarks/search_efficiency.py report results.json [more.json ...] [--html fig.html]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)

METHODS = ["random", "tpe", "gp", "nsga2", "zeroth-order", "xgboost", "xgboost+sens"]
PROBLEMS = ["zdt1", "dtlz2", "digits-cnn", "digits-merge", "quantune-48", "bits-table"]
#: measured tables (benchmarks/measure_tables.py)
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
#: one-objective table problems: also "trials to within 0.5 pp of the best configuration"
WITHIN = {"quantune-48": 0.005}
#: zeroth-order moves continuous knobs only: problems with nothing else
CONTINUOUS = {"zdt1", "dtlz2", "digits-merge"}
#: the sensitivity warm start allocates bitwidths: problems with bitwidth knobs
WITH_BITS = {"digits-cnn"}
BASELINES = ("tpe", "gp", "nsga2")
_EVALUATORS: dict[str, Any] = {}


def applies(problem_name: str, method: str) -> bool:
    if method == "zeroth-order":
        return problem_name in CONTINUOUS
    if method == "xgboost+sens":
        return problem_name in WITH_BITS
    return True


@dataclass
class Problem:
    directions: list[str]
    #: loss = value * sign / scale; reference and hypervolume live in that space
    scale: np.ndarray
    reference: np.ndarray
    objective: Any
    warm: list[dict[str, Any]] = field(default_factory=list)
    #: another reference point, reported as a check that the ranking does not hinge on the first
    check_reference: np.ndarray | None = None
    #: seconds each call of ``objective`` spent evaluating (after its suggestions)
    evaluate_s: list[float] = field(default_factory=list)


def _evaluator(task: str) -> Any:
    if task not in _EVALUATORS:
        from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
        from paretoml.objectives.tasks.registry import create_task

        _EVALUATORS[task] = TrialEvaluator(create_task(task), MeasureSettings())
    return _EVALUATORS[task]


def problem(name: str, warm_start: bool = False) -> Problem:
    """The problem's objective and its fixed normalisation; ``warm_start`` also measures the
    per-layer sensitivities and returns the warm-start configurations."""
    spent: list[float] = []

    def timed(params: Any, evaluate: Any) -> Any:
        """Optuna samples lazily, inside the first suggestion: time the evaluation alone."""
        t0 = time.perf_counter()
        try:
            return evaluate(params)
        finally:
            spent.append(time.perf_counter() - t0)

    if name == "zdt1":
        def zdt1_values(x: np.ndarray) -> tuple[float, float]:
            g = 1 + 9 * x[1:].mean()
            return float(x[0]), float(g * (1 - np.sqrt(x[0] / g)))

        def zdt1(t: optuna.Trial) -> tuple[float, float]:
            return timed(np.array([t.suggest_float(f"x{i}", 0, 1) for i in range(10)]), zdt1_values)
        return Problem(["minimize"] * 2, np.ones(2), np.array([1.1, 11.0]), zdt1, evaluate_s=spent)
    if name == "dtlz2":
        def dtlz2_values(x: np.ndarray) -> tuple[float, float]:
            g = float(np.sum((x[1:] - 0.5) ** 2))
            return (1 + g) * np.cos(x[0] * np.pi / 2), (1 + g) * np.sin(x[0] * np.pi / 2)

        def dtlz2(t: optuna.Trial) -> tuple[float, float]:
            return timed(np.array([t.suggest_float(f"x{i}", 0, 1) for i in range(8)]), dtlz2_values)
        return Problem(["minimize"] * 2, np.ones(2), np.array([1.1, 1.1]), dtlz2, evaluate_s=spent)

    if name in ("quantune-48", "bits-table"):
        return _table_problem(name, timed, spent)
    from paretoml.search_space.knobs import BitwidthKnob, MergeKnob, PruneKnob
    from paretoml.search_space.space import JointSpace

    ev = _evaluator(name)
    if name == "digits-cnn":
        space = JointSpace([BitwidthKnob(choices=[2, 3, 4, 6, 8, 16]), PruneKnob(high=0.9)], ev.layers)
        fp32 = ev.reference(["model_bytes"]).values["model_bytes"]

        def cnn(t: optuna.Trial) -> tuple[float, float]:
            v = timed(space.suggest(t), lambda c: ev.evaluate(c, ["accuracy", "model_bytes"])).values
            return v["accuracy"], v["model_bytes"]
        warm = []
        if warm_start:
            from paretoml.service.spec import WarmStartSpec
            from paretoml.surrogates.sensitivity import measure_sensitivity, prune_grid, warm_start_allocations

            # what a spec's `warm_start: {method: sensitivity}` does, with its default budgets
            sens = measure_sensitivity(ev, space.bits_layers, [2, 3, 4, 6, 8, 16], prune_grid(0.0, 0.9),
                                       space.unstructured_prune_layers)
            start = space.uniform_params(prune=0.0)
            warm = [space.with_allocation(start, allocation)
                    for allocation in warm_start_allocations(sens, ev.layers, WarmStartSpec().fractions)]
        return Problem(["maximize", "minimize"], np.array([1.0, fp32]), np.array([-0.5, 0.125]), cnn, warm,
                       check_reference=np.array([-0.9, 0.25]), evaluate_s=spent)
    space = JointSpace([MergeKnob()], ev.layers, n_checkpoints=ev.n_checkpoints)

    def merge(t: optuna.Trial) -> float:
        return timed(space.suggest(t), lambda c: ev.evaluate(c, ["accuracy"])).values["accuracy"]
    return Problem(["maximize"], np.ones(1), np.array([0.0]), merge, evaluate_s=spent)


def _table_problem(name: str, timed: Any, spent: list[float]) -> Problem:
    table = json.load(open(os.path.join(DATA, f"{name}.json")))
    if name == "quantune-48":
        knobs = table["knobs"]
        accuracy = {tuple(row[k] for k in knobs): row["accuracy"] for row in table["rows"]}

        def quantune(t: optuna.Trial) -> float:
            config = tuple(t.suggest_categorical(k, choices) for k, choices in knobs.items())
            return timed(config, accuracy.__getitem__)
        return Problem(["maximize"], np.ones(1), np.array([0.0]), quantune, evaluate_s=spent)
    layers = table["layers"]

    def values(config: dict[str, tuple[int, int]]) -> tuple[float, float]:
        drop = sum(layers[n]["bits_drop"][str(b)] + layers[n]["prune_drop"][str(p)] for n, (b, p) in config.items())
        size = table["other_bytes"] + sum(layers[n]["bytes"][f"{b},{p}"] for n, (b, p) in config.items())
        return table["fp32_accuracy"] - drop, float(size)

    def bits(t: optuna.Trial) -> tuple[float, float]:
        config = {n: (t.suggest_categorical(f"bits.{n}", table["bits"]),
                      t.suggest_int(f"prune_tenths.{n}", 0, max(table["prune_tenths"]))) for n in layers}
        return timed(config, values)
    return Problem(["maximize", "minimize"], np.array([1.0, table["fp32_bytes"]]), np.array([-0.5, 0.125]), bits,
                   check_reference=np.array([-0.9, 0.25]), evaluate_s=spent)


def repeated_configurations(params: list[dict[str, Any]]) -> int:
    """Trials whose parameters equal an earlier trial's (exactly)."""
    seen: set[tuple[tuple[str, Any], ...]] = set()
    repeats = 0
    for p in params:
        key = tuple(sorted(p.items()))
        repeats += key in seen
        seen.add(key)
    return repeats


def normalised_losses(values: np.ndarray, directions: list[str], scale: np.ndarray) -> np.ndarray:
    from paretoml.surrogates.pareto import loss_signs

    return np.asarray(values, dtype=float) * loss_signs(directions) / scale


def hypervolume_curve(losses: np.ndarray, reference: np.ndarray) -> list[float]:
    """Hypervolume of the first n trials' losses against ``reference``, for every n."""
    from paretoml.surrogates.pareto import hypervolume_curve as curve

    return curve(losses, reference)


def run_one(job: tuple[str, str, int, int]) -> dict[str, Any]:
    name, method, seed, n_trials = job
    from paretoml.surrogates.registry import create_sampler

    start = time.perf_counter()
    prob = problem(name, warm_start=method == "xgboost+sens")
    warm_s = time.perf_counter() - start
    sampler = create_sampler("xgboost" if method == "xgboost+sens" else method, {}, seed=seed)
    study = optuna.create_study(directions=prob.directions, sampler=sampler)
    for params in prob.warm:
        study.enqueue_trial(params)
    stamps: list[float] = []
    start = time.perf_counter()
    study.optimize(prob.objective, n_trials=n_trials, callbacks=[lambda *_: stamps.append(time.perf_counter())])
    wall = time.perf_counter() - start
    assert all(t.values is not None for t in study.trials) and len(prob.evaluate_s) == len(study.trials)
    values = np.array([t.values for t in study.trials], dtype=float)
    # a trial's time less its evaluation: the sampler's suggestions plus Optuna's bookkeeping
    trial_s = np.diff([start, *stamps])
    sampler_s = [max(float(a - b), 0.0) for a, b in zip(trial_s, prob.evaluate_s)]
    return _rounded({"problem": name, "method": method, "seed": seed, "wall_s": wall, "warm_start_s": warm_s,
                     "n_warm": len(prob.warm), "values": values.tolist(), "sampler_s": sampler_s,
                     "repeats": repeated_configurations([t.params for t in study.trials]),
                     "evaluate_s": prob.evaluate_s,
                     "hv": hypervolume_curve(normalised_losses(values, prob.directions, prob.scale), prob.reference)})


def _rounded(result: dict[str, Any]) -> dict[str, Any]:
    """8 significant digits for values and hypervolumes, 10 us for times: a smaller file."""
    def sig(x: float) -> float:
        return float(f"{x:.8g}")

    result["values"] = [[sig(v) for v in row] for row in result["values"]]
    result["hv"] = [sig(v) for v in result["hv"]]
    for key in ("sampler_s", "evaluate_s"):
        result[key] = [round(v, 5) for v in result[key]]
    return result


def _machine() -> str:
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _machine import machine

    return machine()


def cmd_run(args: argparse.Namespace) -> None:
    done: list[dict[str, Any]] = []
    if args.resume and os.path.exists(args.out):
        done = json.load(open(args.out))["results"]
    have = {(r["problem"], r["method"], r["seed"]) for r in done}
    jobs = [(p, m, s, args.gp_trials if m == "gp" else args.trials)
            for p in args.problems for m in args.methods for s in range(args.seeds)
            if applies(p, m) and (p, m, s) not in have]
    jobs.sort(key=lambda j: (j[1] != "gp", j[2]))  # the slowest first, then seed by seed
    header = {"trials": args.trials, "gp_trials": args.gp_trials, "seeds": args.seeds, "machine": _machine()}
    print(f"{len(jobs)} runs on {args.jobs} processes ({len(done)} already done); {header['machine']}", flush=True)
    results = list(done)
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for result in pool.imap_unordered(run_one, jobs):
            results.append(result)
            print(f"{result['problem']:13s} {result['method']:13s} seed {result['seed']}: "
                  f"hv {result['hv'][-1]:.4f} in {result['wall_s']:.0f} s", flush=True)
            with open(args.out + ".tmp", "w") as handle:  # after every run: a cut-off run keeps what finished
                json.dump({**header, "results": results}, handle)
            os.replace(args.out + ".tmp", args.out)


def _curves(rows: list[dict[str, Any]], name: str, reference: np.ndarray | None) -> dict[str, np.ndarray]:
    """Hypervolume curves per method (seeds x trials), recomputed from the stored values when
    ``reference`` is given."""
    curves: dict[str, np.ndarray] = {}
    prob = None
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        if reference is None:
            curves[method] = np.array([r["hv"] for r in mine])
            continue
        if prob is None:
            prob = problem(name)
        curves[method] = np.array([hypervolume_curve(
            normalised_losses(np.array(r["values"]), prob.directions, prob.scale), reference) for r in mine])
    return curves


def _table(curves: dict[str, np.ndarray], rows: list[dict[str, Any]], checkpoints: list[int]) -> list[str]:
    medians = {m: np.median(c, axis=0) for m, c in curves.items()}
    best_name = max((m for m in BASELINES if m in medians), key=lambda m: medians[m][-1], default=None)
    target_best = medians[best_name][-1] if best_name else float("nan")
    target_random = medians["random"][-1] if "random" in medians else float("nan")
    lines = [
        f"Targets: best of TPE/GP/NSGA-II = {best_name} at its last trial ({target_best:.4g}); "
        f"random at its last trial ({target_random:.4g}). Goals for xgboost: best-Optuna in <= 60, random in <= 30.",
        "",
        "| method | " + " | ".join(f"@{c}" for c in checkpoints)
        + " | trials to best-Optuna | trials to random | repeated configs | sampler s/trial (last 50) | wall s |",
        "|---|" + "---:|" * (len(checkpoints) + 5),
    ]
    for method, curve in curves.items():
        med = medians[method]
        n = curve.shape[1]
        cells = [f"{med[c - 1]:.4g} ({curve[:, c - 1].min():.4g}-{curve[:, c - 1].max():.4g})" if c <= n else "-"
                 for c in checkpoints]
        reach = [str(int(np.argmax(med >= t)) + 1) if np.any(med >= t) else f">{n}" for t in (target_best, target_random)]
        mine = [r for r in rows if r["method"] == method]
        per_trial = (np.median([np.mean(r["sampler_s"][-50:]) for r in mine])
                     if all("sampler_s" in r for r in mine) else float("nan"))
        wall = np.median([r["wall_s"] for r in mine])
        repeats = [r["repeats"] for r in mine if "repeats" in r]
        repeat_cell = f"{np.median(repeats):.0f} ({min(repeats)}-{max(repeats)})" if repeats else "-"
        lines.append(f"| {method} | " + " | ".join(cells) + " | " + " | ".join(reach)
                     + f" | {repeat_cell} | {per_trial:.3g} | {wall:.0f} |")
    return lines


def _within_table(rows: list[dict[str, Any]], tolerance: float) -> list[str]:
    """Trials each method needs to come within ``tolerance`` of the best value in the table
    (one objective, maximised), per seed; median and the ratio to random's median."""
    best = max(v[0] for r in rows for v in r["values"])
    table = json.load(open(os.path.join(DATA, f"{rows[0]['problem']}.json")))
    best = max(best, max(row["accuracy"] for row in table["rows"]))
    needed: dict[str, list[float]] = {}
    for method in METHODS:
        for r in (r for r in rows if r["method"] == method):
            hits = [i + 1 for i, v in enumerate(r["values"]) if v[0] >= best - tolerance - 1e-12]
            needed.setdefault(method, []).append(hits[0] if hits else float("inf"))
    random_median = np.median(needed.get("random", [np.nan]))
    lines = [f"Trials to within {100 * tolerance:.1f} pp of the best configuration ({best:.4f}), per seed:", "",
             "| method | median | ratio to random | per seed |", "|---|---:|---:|---|"]
    for method, n in needed.items():
        lines.append(f"| {method} | {np.median(n):g} | {np.median(n) / random_median:.2f} | "
                     + ", ".join(f"{v:g}" for v in n) + " |")
    return lines


def cmd_report(args: argparse.Namespace) -> None:
    data = [json.load(open(path)) for path in args.results]
    results = [r for d in data for r in d["results"]]
    trials = max(len(r["hv"]) for r in results)
    seeds = sorted({r["seed"] for r in results})
    checkpoints = [c for c in (10, 20, 30, 60, 100, 150, 200, 300) if c <= trials]
    for d in data:
        print(f"machine: {d.get('machine', '?')}")
    print(f"\nseeds {seeds}, up to {trials} trials; median hypervolume (spread: min-max over seeds); "
          "'trials to X' is the first trial at which the median curve reaches X\n")
    for name in PROBLEMS:
        rows = [r for r in results if r["problem"] == name]
        if not rows:
            continue
        recompute = all("values" in r for r in rows)
        prob = problem(name) if recompute else None
        where = (f"reference {prob.reference.tolist()} on losses = value x sign / {prob.scale.tolist()}"
                 if prob else "stored curves")
        print(f"### {name}\n\n{where}\n")
        curves = _curves(rows, name, prob.reference if prob else None)
        print("\n".join(_table(curves, rows, checkpoints)) + "\n")
        if name in WITHIN:
            print("\n".join(_within_table(rows, WITHIN[name])) + "\n")
        if prob is not None and prob.check_reference is not None:
            print(f"Check with reference {prob.check_reference.tolist()}:\n")
            print("\n".join(_table(_curves(rows, name, prob.check_reference), rows, checkpoints)) + "\n")
    if args.html:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        names = [p for p in PROBLEMS if any(r["problem"] == p for r in results)]
        fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
        colours = dict(zip(METHODS, ("#7f7f7f", "#1f77b4", "#9467bd", "#2ca02c", "#8c564b", "#d62728", "#ff7f0e")))
        for col, name in enumerate(names, start=1):
            rows = [r for r in results if r["problem"] == name]
            prob = problem(name) if all("values" in r for r in rows) else None
            for method, curve in _curves(rows, name, prob.reference if prob else None).items():
                x = list(range(1, curve.shape[1] + 1))
                colour = colours[method]
                fig.add_trace(go.Scatter(x=x + x[::-1], y=list(curve.max(axis=0)) + list(curve.min(axis=0))[::-1],
                                         fill="toself", line={"width": 0}, fillcolor=colour, opacity=0.15,
                                         legendgroup=method, showlegend=False, hoverinfo="skip"), row=1, col=col)
                fig.add_trace(go.Scatter(x=x, y=np.median(curve, axis=0), name=method, legendgroup=method,
                                         line={"color": colour}, showlegend=col == 1), row=1, col=col)
        fig.update_layout(title="Hypervolume against trials (median and min-max over seeds)", height=450,
                          width=420 * len(names))
        fig.write_html(args.html, include_plotlyjs="cdn" if args.cdn else True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--out", required=True)
    run.add_argument("--trials", type=int, default=300)
    run.add_argument("--gp-trials", type=int, default=150, help="GP's suggestions cost seconds at a few hundred trials")
    run.add_argument("--seeds", type=int, default=5)
    run.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    run.add_argument("--problems", nargs="+", default=PROBLEMS, choices=PROBLEMS)
    run.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    run.add_argument("--resume", action="store_true", help="keep the runs already in --out, run the rest")
    report = sub.add_parser("report")
    report.add_argument("results", nargs="+")
    report.add_argument("--html")
    report.add_argument("--cdn", action="store_true", help="link plotly.js instead of embedding it")
    args = parser.parse_args()
    cmd_run(args) if args.command == "run" else cmd_report(args)


if __name__ == "__main__":
    main()
