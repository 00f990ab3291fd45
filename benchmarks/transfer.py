"""Surrogate transfer across studies (issue 27): does a stored study of one model cut the
search on another?

Every study here is a real run: the StudyRunner with the in-process executor on one SQLite
file, xgboost sampler, sensitivity warm start. The *cold* runs of each task are the baseline;
the *transfer* runs are the same spec plus ``transfer_from: [<the other task's cold study,
seed 0>]``. Seeds pair: transfer seed s is compared with cold seed s.

Hypervolume is on normalised losses (accuracy or fidelity as a fraction of the uncompressed
model's, negated; bytes as a fraction of the fp32 bytes) against the reference point
(-0.5, 0.25): models that keep at least half the quality at no more than a quarter of the fp32
bytes count.

  python benchmarks/transfer.py run --db DB --out runs.jsonl --trials 100 --jobs digits-cnn:cold:0 ...
  python benchmarks/transfer.py time --db DB --out time.json --target STUDY --sources S1 S2 ...
  python benchmarks/transfer.py features --db DB --out features.json --pairs SRC:TGT ...
  python benchmarks/transfer.py report runs.jsonl --time time.json --features features.json
      --md out.md --html out.html --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)

REFERENCE_POINT = np.array([-0.5, 0.25])
QUALITY = {"digits-cnn": "accuracy", "digits-cnn-wide": "accuracy", "digits-merge": "accuracy", "minilm": "fidelity", "mpnet": "fidelity"}
#: each task's source in the transfer runs
PARTNER = {"digits-cnn": "digits-merge", "digits-merge": "digits-cnn", "digits-cnn-wide": "digits-cnn", "minilm": "mpnet", "mpnet": "minilm"}
BITS = [2, 3, 4, 6, 8]


def task_spec(task: str) -> dict[str, Any]:
    if task == "digits-cnn":
        knobs = [{"kind": "bitwidth", "choices": BITS},
                 {"kind": "prune", "method": "structured", "low": 0.0, "high": 0.75, "step": 0.125}]
        return {"task": task, "knobs": knobs}
    if task == "digits-cnn-wide":  # another model: the digits CNN at twice the width, four times the parameters
        return {**task_spec("digits-cnn"), "task_options": {"width": 32, "hidden": 128}}
    if task == "digits-merge":
        return {"task": task, "knobs": [{"kind": "merge", "low": 0.0, "high": 1.0}, {"kind": "bitwidth", "choices": BITS}]}
    raise SystemExit(f"task {task!r}: not run by this benchmark on this machine (see the report)")


def study_name(task: str, mode: str, seed: int) -> str:
    return f"{task}-{mode}-s{seed}"


def spec_for(task: str, mode: str, seed: int, trials: int) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if mode == "transfer":
        options["transfer_from"] = [study_name(PARTNER[task], "cold", 0)]
    return {
        **task_spec(task),
        "objectives": [{"name": QUALITY[task]}, {"name": "model_bytes"}],
        "sampler": {"name": "xgboost", "options": options},
        "warm_start": {"method": "sensitivity"},
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": trials,
        "seed": seed,
    }


def normalised(values: np.ndarray, reference: dict[str, Any], names: list[str]) -> np.ndarray:
    """(-quality / uncompressed quality, bytes / fp32 bytes)."""
    quality = values[:, 0] / float(reference[names[0]])
    return np.stack([-quality, values[:, 1] / float(reference["model_bytes"])], axis=1)


def hypervolume_curve(losses: np.ndarray, reference: np.ndarray = REFERENCE_POINT) -> list[float]:
    from paretoml.surrogates.pareto import hypervolume_curve as curve

    return curve(losses, reference)


def ask_seconds(study: optuna.Study) -> list[float]:
    """Seconds between one trial's end and the next one's start: the runner's bookkeeping.
    Not the suggestion: Optuna stamps a trial's start before its sampler runs, so the
    suggestion is inside the trial's own duration (``time`` measures it apart)."""
    trials = sorted(study.trials, key=lambda t: t.number)
    out = []
    for before, after in zip(trials, trials[1:]):
        if before.datetime_complete and after.datetime_start:
            out.append((after.datetime_start - before.datetime_complete).total_seconds())
    return out


def one_thread() -> None:
    """Run trials and suggestions on one thread, cold and transfer alike. On this machine (2
    cores, load 20 from the other engineers) XGBoost's default of ``min(4, cpu_count())`` = 2
    OpenMP threads spun at barriers: one suggestion of the digits-cnn study at 15 trials took
    51-90 s with 2 threads and 0.85-1.05 s with 1 (measured before these runs). The sampler
    reads ``os.cpu_count()``; this process says 1."""
    import os

    import torch

    torch.set_num_threads(1)
    os.cpu_count = lambda: 1  # type: ignore[assignment]


# -- run ---------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> None:
    from paretoml.service.spec import parse_spec
    from paretoml.service.executors.inprocess import InProcessExecutor
    from paretoml.search_space.trial_attrs import BASELINE_ATTR
    from paretoml.service.runner import StudyRunner

    one_thread()
    storage = optuna.storages.RDBStorage(f"sqlite:///{args.db}", engine_kwargs={"connect_args": {"timeout": 60}})
    for job in args.jobs:
        task, mode, seed = job.split(":")
        name = study_name(task, mode, int(seed))
        if mode == "transfer" and args.source_db:
            bring_source(storage, args.source_db, study_name(PARTNER[task], "cold", 0), args.trials)
        spec = parse_spec(spec_for(task, mode, int(seed), args.trials))
        t0 = time.perf_counter()
        with InProcessExecutor(spec) as executor:
            runner = StudyRunner.create(spec, storage, name, executor)
            runner.run()
        wall = time.perf_counter() - t0
        study = runner.study
        complete = [t for t in sorted(study.trials, key=lambda t: t.number) if t.state.name == "COMPLETE"]
        row = {"task": task, "mode": mode, "seed": int(seed), "study": name, "wall_s": round(wall, 1),
               "names": study.metric_names, "reference": {k: v for k, v in runner.model.reference.items()
                                                          if isinstance(v, (int, float))},
               "values": [list(t.values) for t in complete],
               "warm": sum(BASELINE_ATTR in t.user_attrs for t in study.trials),
               "ask_s": ask_seconds(study)}
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{name}: {len(complete)} trials in {wall:.0f} s", flush=True)


def bring_source(storage: optuna.storages.BaseStorage, source_db: str, name: str, trials: int) -> None:
    """Copy the finished source study ``name`` from another SQLite file into ``storage``
    (``optuna.copy_study``: its trials and attributes as stored), waiting until it has
    ``trials`` complete trials. Each process writes its own file: two processes committing
    to one SQLite file on this shared disk made every trial wait seconds for the lock."""
    if name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        return
    url = f"sqlite:///{source_db}"
    while True:
        done = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)} if Path(source_db).exists() else {}
        if name in done:
            study = optuna.load_study(study_name=name, storage=url)
            if len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) >= trials:
                break
        time.sleep(15)
    optuna.copy_study(from_study_name=name, from_storage=url, to_storage=storage)


# -- suggestion time ------------------------------------------------------------------------------
def cmd_time(args: argparse.Namespace) -> None:
    from paretoml.surrogates.transfer import SOURCES, transfer_set
    from paretoml.surrogates.xgboost_sampler import XGBoostSampler

    one_thread()
    storage = optuna.storages.RDBStorage(f"sqlite:///{args.db}")
    for item in args.copy or []:  # DB:STUDY: a stored study of another file joins this one
        db, name = item.split(":")
        bring_source(storage, db, name, 0)
    study = optuna.load_study(study_name=args.target, storage=storage)
    last = study.trials[-1]
    cold = XGBoostSampler(seed=0)
    warm = XGBoostSampler(seed=0, transfer_from=args.sources)
    space = cold.infer_relative_search_space(study, last)
    from paretoml.search_space.encoding import VectorEncoding as Encoding  # noqa: N814

    n_source = len(transfer_set(study, Encoding(space), args.sources).features)  # read (cached) once, not timed
    n_fitted = len(transfer_set(study, Encoding(space), args.sources, limit=warm.max_train // 2).features)
    times: dict[str, list[float]] = {"cold": [], "transfer": []}
    for _ in range(args.repeats):
        for label, sampler in (("cold", cold), ("transfer", warm)):
            t0 = time.perf_counter()
            sampler.sample_relative(study, last, space)
            times[label].append(time.perf_counter() - t0)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"target": args.target, "own_trials": len(study.trials) - 1, "source_trials": n_source,
              "source_rows_fitted": n_fitted,
              "sources": args.sources, "cold_ms": round(1000 * medians["cold"], 1),
              "transfer_ms": round(1000 * medians["transfer"], 1),
              "ratio": round(medians["transfer"] / medians["cold"], 2), "repeats": args.repeats,
              "reads": SOURCES.reads}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(result)


# -- which feature groups carry ------------------------------------------------------------------
GROUP_SETS = {
    "global": ["global"],
    "global+kind+depth": ["global", "kind", "depth"],
    "global+kind+depth+fan": ["global", "kind", "depth", "fan"],
    "all (+merge, sens)": ["global", "kind", "depth", "fan", "merge", "sens"],
}


def cmd_features(args: argparse.Namespace) -> None:
    """Train on a source study's features alone, predict a target study's normalised
    objectives: Spearman rank correlation per objective, for each set of feature groups."""
    import xgboost
    from scipy.stats import spearmanr

    from paretoml.surrogates.layer_features import group_columns
    from paretoml.surrogates.transfer import SourceCache

    storage = optuna.storages.RDBStorage(f"sqlite:///{args.db}")
    cache = SourceCache()
    out = []
    for pair in args.pairs:
        source_name, target_name = pair.split(":")
        source = cache.source(storage, source_name)
        target = cache.source(storage, target_name)  # the same reading: features of its stored configs
        for label, groups in GROUP_SETS.items():
            cols = group_columns(groups)
            rhos = []
            for j in range(source.losses.shape[1]):
                model = xgboost.XGBRegressor(n_estimators=30, max_depth=5, learning_rate=0.15, tree_method="hist",
                                             max_bin=32, n_jobs=2, random_state=0)
                model.fit(source.features[:, cols], source.losses[:, j])
                predicted = model.predict(target.features[:, cols])
                rhos.append(float(spearmanr(predicted, target.losses[:, j]).statistic))
            out.append({"source": source_name, "target": target_name, "features": label,
                        "n_features": int(len(cols)), "spearman": [round(r, 3) for r in rhos]})
            print(out[-1], flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


# -- report ------------------------------------------------------------------------------------
def trials_to_reach(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, hv in enumerate(curve) if hv >= target - 1e-12), None)


def cmd_report(args: argparse.Namespace) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from _machine import machine

    rows = [json.loads(line) for path in args.runs for line in Path(path).read_text().splitlines() if line.strip()]
    for row in rows:
        row["curve"] = hypervolume_curve(normalised(np.array(row["values"]), row["reference"], row["names"]))
    tasks = sorted({r["task"] for r in rows})
    lines = [f"Machine: {machine()}; 2 cores shared with other engineers' jobs (load average 11-20 while this ran).", ""]
    lines += ["| target | source | seed | cold HV@last | trials to cold's HV@last (transfer) | transfer HV@10 | cold HV@10 | "
              "transfer HV@30 | cold HV@30 | worst shortfall vs cold (any n) | wall s cold | wall s transfer |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    summary: dict[str, Any] = {}
    fig = make_subplots(rows=1, cols=len(tasks), subplot_titles=[f"{t} (source: {PARTNER[t]})" for t in tasks])
    for k, task in enumerate(tasks, start=1):
        reach, shortfalls = [], []
        for seed in sorted({r["seed"] for r in rows if r["task"] == task}):
            cold = next((r for r in rows if r["task"] == task and r["mode"] == "cold" and r["seed"] == seed), None)
            warm = next((r for r in rows if r["task"] == task and r["mode"] == "transfer" and r["seed"] == seed), None)
            for run, colour in ((cold, "#888"), (warm, "#d62728")):
                if run is not None:
                    fig.add_trace(go.Scatter(y=run["curve"], x=list(range(1, len(run["curve"]) + 1)), mode="lines",
                                             line={"color": colour, "width": 1.5},
                                             name=f"{run['mode']} seed {seed}", legendgroup=run["mode"],
                                             showlegend=k == 1), row=1, col=k)
            if cold is None or warm is None:
                continue
            n = min(len(cold["curve"]), len(warm["curve"]))
            goal = cold["curve"][n - 1]
            hit = trials_to_reach(warm["curve"][:n], goal)
            reach.append(hit if hit is not None else float("inf"))
            ratio = [w / c - 1 for w, c in zip(warm["curve"][:n], cold["curve"][:n]) if c > 0]
            shortfall = min(ratio) if ratio else 0.0
            shortfalls.append(shortfall)
            at = lambda r, i: r["curve"][min(i, len(r["curve"])) - 1]  # noqa: E731
            lines.append(
                f"| {task} | {PARTNER[task]} cold s0 | {seed} | {goal:.4f} | {hit if hit else f'not in {n}'} | "
                f"{at(warm, 10):.4f} | {at(cold, 10):.4f} | {at(warm, 30):.4f} | {at(cold, 30):.4f} | "
                f"{100 * shortfall:+.1f}% | {cold['wall_s']:.0f} | {warm['wall_s']:.0f} |")
        if reach:
            pairs = [(c, w) for c, w in ((next((r for r in rows if r["task"] == task and r["mode"] == m and r["seed"] == s), None)
                                          for m in ("cold", "transfer")) for s in sorted({r["seed"] for r in rows if r["task"] == task}))
                     if c is not None and w is not None]
            ratio_at = {}
            for n_at in (15, 20, 30, 50):
                ratios = [w["curve"][n_at - 1] / c["curve"][n_at - 1] - 1 for c, w in pairs
                          if len(c["curve"]) >= n_at and len(w["curve"]) >= n_at and c["curve"][n_at - 1] > 0]
                if ratios:
                    ratio_at[n_at] = round(100 * statistics.median(ratios), 2)
            median_reach = statistics.median(reach)
            summary[task] = {"median_trials_to_cold_hv": None if median_reach == float("inf") else median_reach,
                             "worst_shortfall_pct": round(100 * min(shortfalls), 2), "seeds": len(reach),
                             "median_hv_vs_cold_pct": ratio_at}
    lines += ["", "| target | median trials (transfer) to reach the cold run's last-trial HV | cold trials | "
              "worst shortfall vs cold at any trial count (worst seed) | median HV vs cold @15 | @20 | @30 | @50 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for task, s in summary.items():
        n = len(next(r for r in rows if r["task"] == task)["values"])
        at = s["median_hv_vs_cold_pct"]
        cells = " | ".join(f"{at[k]:+.1f}%" if k in at else "" for k in (15, 20, 30, 50))
        reach_cell = s["median_trials_to_cold_hv"]
        reach_cell = f"not in {n}" if reach_cell is None else reach_cell
        lines.append(f"| {task} | {reach_cell} | {n} | {s['worst_shortfall_pct']:+.1f}% | {cells} |")
    extra: dict[str, Any] = {}
    if args.time:
        t = json.loads(Path(args.time).read_text())
        extra["suggestion_time"] = t
        lines += ["", "Suggestion time (sample_relative, median of "
                  f"{t['repeats']}, alternating in one process): target {t['target']} with {t['own_trials']} own trials; "
                  f"{t['source_trials']} source trials from {len(t['sources'])} studies read, "
                  f"{t.get('source_rows_fitted', t['source_trials'])} of them in each fit (max_train).", "",
                  "| cold ms | transfer ms | ratio |", "|---:|---:|---:|",
                  f"| {t['cold_ms']} | {t['transfer_ms']} | {t['ratio']} |"]
    if args.features:
        f = [item for path in args.features for item in json.loads(Path(path).read_text())]
        extra["features"] = f
        lines += ["", "Feature groups: a model trained on the source study's features alone ranks the target study's "
                  "trials (Spearman rank correlation of predicted and measured normalised objective).", "",
                  "| source -> target | features | n | rho quality | rho bytes |", "|---|---|---:|---:|---:|"]
        for item in f:
            lines.append(f"| {item['source']} -> {item['target']} | {item['features']} | {item['n_features']} | "
                         f"{item['spearman'][0]:+.3f} | {item['spearman'][1]:+.3f} |")
    fig.update_layout(title="Hypervolume by trials: cold xgboost + warm start (grey) vs + transfer (red)",
                      xaxis_title="trials", yaxis_title="hypervolume", height=450)
    Path(args.md).write_text("\n".join(lines) + "\n")
    fig.write_html(args.html, include_plotlyjs="cdn")
    Path(args.json).write_text(json.dumps({"machine": machine(), "summary": summary, **extra,
                                           "runs": [{k: v for k, v in r.items()} for r in rows]}, indent=None))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--db", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--trials", type=int, default=100)
    run.add_argument("--jobs", nargs="+", required=True, help="task:mode:seed (mode cold | transfer)")
    run.add_argument("--source-db", help="SQLite file the transfer runs' source study is copied from")
    tm = sub.add_parser("time")
    tm.add_argument("--db", required=True)
    tm.add_argument("--out", required=True)
    tm.add_argument("--target", required=True)
    tm.add_argument("--sources", nargs="+", required=True)
    tm.add_argument("--repeats", type=int, default=7)
    tm.add_argument("--copy", nargs="*", help="DB:STUDY copied into --db first (optuna.copy_study)")
    ft = sub.add_parser("features")
    ft.add_argument("--db", required=True)
    ft.add_argument("--out", required=True)
    ft.add_argument("--pairs", nargs="+", required=True)
    rp = sub.add_parser("report")
    rp.add_argument("runs", nargs="+")
    rp.add_argument("--time")
    rp.add_argument("--features", nargs="*")
    rp.add_argument("--md", required=True)
    rp.add_argument("--html", required=True)
    rp.add_argument("--json", required=True)
    args = parser.parse_args()
    {"run": cmd_run, "time": cmd_time, "features": cmd_features, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
