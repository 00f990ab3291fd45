"""A GPU study at scale: a pretrained transformer, hundreds of trials, samplers compared.

Everything runs through the product's own path: a study spec, ``StudyRunner``, the Ray pool
(workers sharing the GPU by fractional ``num_gpus``, each holding the model once), a SQLite
study per run. The knobs are those of ``studies/<task>.yaml`` with GPU bitwidths (4: int4
weight-only, 8: int8 / fp8, 16: bf16), activation bits (8, 16) on the Linear layers and the
spec's structured pruning; the objectives are fidelity, packed bytes and latency.

Phases (``--phases``; each writes its part of ``--out/<task>.json``):

* ``scaling``: the same random-sampler study with 1, 2, 4, 8 workers on one GPU: trials
  per hour, the GPU's busy share (NVML) over the trial phase, and the start-up cost.
* ``baselines``: uniform fp16, fp8 (W8A8), int8 and int4 weight-only, and the sensitivity
  ILP's configurations at the int8 and int4 byte budgets (and half-way between).
* ``samplers``: ``random tpe gp nsga2 xgboost`` (those of ``--warm`` with the sensitivity
  warm start, by default xgboost; ``--cold`` runs them without it as well),
  one driver process per sampler study, all on one Ray runtime and one GPU at once (the
  'auto' share splits the GPU between them).
  Hypervolume against trials is computed afterwards (``report``), on objectives normalised
  over every trial of every run; the suggestion time (ask + the knobs' suggestions) is
  measured per trial in the driver.

    python benchmarks/gpu_study.py run --task minilm --out DIR [--phases scaling baselines samplers]
    python benchmarks/gpu_study.py merge ALL.json --json DIR1/minilm.json DIR2/minilm.json \
        [--db LABEL:SEED:STUDY.db ...]   # runs from several calls, and studies cut short
    python benchmarks/gpu_study.py report ALL.json [--html FILE] [--md FILE]

A scaling row carries the median seconds of each trial step (build, deployable model, scoring,
latency with its wait for the timing lock), from the trials' ``paretoml:timings``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from paretoml.search_space.trial_attrs import (
    BASELINE_ATTR,
    KERNELS_ATTR,
    PROVENANCE_ATTR,
    TIMINGS_ATTR,
    WORKER_ATTR,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

OBJECTIVES = ["fidelity", "model_bytes", "latency_ms"]
DIRECTIONS = ["maximize", "minimize", "minimize"]
SAMPLERS = ["random", "tpe", "gp", "nsga2", "xgboost"]
TASK_OPTIONS: dict[str, dict[str, Any]] = {
    # every trial scores 1,000 sentences: the evaluation, not Python, should set the pace
    "minilm": {"n_calibration": 64, "n_validation": 1000, "n_test": 0, "max_length": 128,
               "batch_size": 250, "latency_batch": 32},
    "mpnet": {"n_calibration": 64, "n_validation": 1000, "n_test": 0, "max_length": 128,
              "batch_size": 250, "latency_batch": 32},
}


# -- the study ------------------------------------------------------------------------------
#: a dry run on a machine without a GPU sets these (``--device cpu --task-options '{...}'``)
OVERRIDES: dict[str, Any] = {"device": "cuda", "task_options": {}}


def study_spec(task: str, n_trials: int, sampler: str, seed: int, warm_start: bool) -> dict[str, Any]:
    """The task's study file with GPU formats as choices, activation bits where a layer has
    a bitwidth knob, and this run's budget, sampler and seed."""
    import yaml

    base = yaml.safe_load((HERE.parent / "studies" / f"{task}.yaml").read_text())
    knobs = []
    for knob in base["knobs"]:
        if knob["kind"] == "bitwidth":
            knobs.append({**knob, "choices": [4, 8, 16]})
            if "linear" in knob.get("layers", {}).get("kinds", []):
                knobs.append({**{k: v for k, v in knob.items() if k != "choices"},
                              "kind": "activation_bits", "choices": [8, 16]})
        else:
            knobs.append(knob)
    spec: dict[str, Any] = {
        "name": f"gpu-{task}-{sampler}-{seed}",
        "task": task,
        "task_options": {**base.get("task_options", {}), **TASK_OPTIONS[task], **OVERRIDES["task_options"]},
        "knobs": knobs,
        "objectives": [{"name": n} for n in OBJECTIVES],
        "sampler": {"name": sampler},
        "measure": {"device": OVERRIDES["device"], "latency_warmup": 5, "latency_repeats": 20},
        "n_trials": n_trials,
        "seed": seed,
    }
    if warm_start:
        spec["warm_start"] = {"method": "sensitivity"}
    return spec


def run_study(spec_dict: dict[str, Any], workers: int, url: str, name: str,
              enqueue: list[tuple[str, dict[str, Any]]] | None = None, sharers: int = 1) -> dict[str, Any]:
    """One study on a Ray pool of ``workers`` sharing the GPU ('auto' share); the timings of
    its phases and every trial."""
    from paretoml.service.executors.ray_pool import RayPoolExecutor
    from paretoml.service.runner import StudyRunner
    from paretoml.service.spec import parse_spec
    from paretoml.service.storage import open_durable_storage

    spec = parse_spec(spec_dict)
    t0 = time.monotonic()
    suggest_s: dict[int, float] = {}
    with RayPoolExecutor(spec, workers=workers, num_cpus=1, num_gpus="auto", gpu_sharers=sharers) as pool:
        runner = StudyRunner.create(spec, open_durable_storage(url), name, pool)
        t_loaded = time.monotonic()
        extra: dict[str, Any] = {}
        if enqueue is not None:
            enqueue[:] = enqueue_from(runner, enqueue)
            extra["configs"] = [label for label, _ in enqueue]
        _time_suggestions(runner, suggest_s)
        runner.run()
        t_done = time.monotonic()
        share = pool.share
    trials = trial_rows(runner.study, suggest_s)
    return {"workers": workers, "gpu_share": share, "start_s": t_loaded - t0, "trials_s": t_done - t_loaded,
            "t_loaded": t_loaded, "t_done": t_done, "trials": trials, **extra}


def trial_rows(study: Any, suggest_s: dict[int, float]) -> list[dict[str, Any]]:
    """Every trial of a study as the report reads it: state, values, step timings, how the
    latency was measured, the kernels that ran, the worker, duration and suggestion time."""
    from optuna.trial import TrialState

    trials = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name,
                               "baseline": t.user_attrs.get(BASELINE_ATTR)}
        if t.state == TrialState.COMPLETE:
            row["values"] = dict(zip(OBJECTIVES, t.values))
            row["timings"] = t.user_attrs.get(TIMINGS_ATTR, {})
            prov = t.user_attrs.get(PROVENANCE_ATTR, {}).get("latency_ms", {})
            row["latency_how"] = prov.get("how")
            kernels = t.user_attrs.get(KERNELS_ATTR, {})
            counts: dict[str, int] = {}
            for layer in kernels.values():
                counts[layer["kernel"]] = counts.get(layer["kernel"], 0) + 1
            row["kernels"] = counts
            row["worker"] = t.user_attrs.get(WORKER_ATTR, {}).get("worker")
        if t.datetime_start and t.datetime_complete:
            row["duration_s"] = (t.datetime_complete - t.datetime_start).total_seconds()
        row["suggest_s"] = suggest_s.get(t.number)
        trials.append(row)
    return trials


def _time_suggestions(runner: Any, out: dict[int, float]) -> None:
    """Record each trial's suggestion time (``study.ask`` plus the knobs' suggestions and
    their storage writes) by wrapping the runner's two calls that make it."""
    ask, prepare = runner.study.ask, runner._prepare
    pending: dict[str, float] = {}

    def timed_ask(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        trial = ask(*a, **k)
        pending["ask"] = time.perf_counter() - start
        return trial

    def timed_prepare(trial: Any) -> Any:
        start = time.perf_counter()
        job = prepare(trial)
        out[trial.number] = pending.pop("ask", 0.0) + time.perf_counter() - start
        return job

    runner.study.ask = timed_ask
    runner._prepare = timed_prepare


def enqueue_from(runner: Any, wanted: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Baseline configurations as parameters of this study, enqueued in it: ``uniform`` ones
    (bits, activation bits) and ``ilp`` ones (the sensitivity allocator at a byte budget)."""
    from paretoml.search_space.model_bytes import packed_weight_bytes
    from paretoml.surrogates.sensitivity import allocate

    space = runner.space
    layers = {layer.name: layer for layer in runner.model.layers}
    done = []
    for label, how in wanted:
        if how["kind"] == "uniform":
            params = space.uniform_params(bits=how["bits"], prune=0.0, act_bits=how["act"])
        else:
            sens = runner.model.sensitivity or []

            def weight_bytes(bits: int) -> int:
                return sum(packed_weight_bytes(int(np.prod(layers[s.layer].weight_shape)),
                                               int(np.prod(layers[s.layer].weight_shape)),
                                               layers[s.layer].weight_shape[0], bits) for s in sens)

            budget = weight_bytes(how["bits_budget"])
            allocation = allocate(sens, runner.model.layers, budget, prune=False)
            if allocation is None:
                continue
            params = space.with_allocation(space.uniform_params(prune=0.0), allocation)
        runner.study.enqueue_trial(params, user_attrs={BASELINE_ATTR: label})
        done.append((label, params))
    from optuna.trial import TrialState

    waiting = runner.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    runner.spec = runner.spec.model_copy(update={"n_trials": len(waiting)})  # the queue, and no more
    return done


BASELINES: list[tuple[str, dict[str, Any]]] = [
    ("fp16", {"kind": "uniform", "bits": 16, "act": 16}),
    ("fp8 W8A8", {"kind": "uniform", "bits": 8, "act": 8}),
    ("int8 weight-only", {"kind": "uniform", "bits": 8, "act": 16}),
    ("int4 weight-only", {"kind": "uniform", "bits": 4, "act": 16}),
    ("ILP @ int8 bytes", {"kind": "ilp", "bits_budget": 8}),
    ("ILP @ 6-bit bytes", {"kind": "ilp", "bits_budget": 6}),
    ("ILP @ int4 bytes", {"kind": "ilp", "bits_budget": 4}),
]


# -- phases ---------------------------------------------------------------------------------
def _merge(rows: list[dict[str, Any]], row: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Put ``row`` in ``rows`` in place of an earlier run with the same ``keys`` (a phase run
    again, or in parts over several calls, keeps the other rows)."""
    rows[:] = [r for r in rows if any((r.get(k) or "") != (row.get(k) or "") for k in keys)] + [row]


def phase_scaling(args: argparse.Namespace, busy: Any, out: dict[str, Any]) -> None:
    rows = out.setdefault("scaling", [])
    for workers in args.workers:
        name = f"scaling-w{workers}"
        spec = study_spec(args.task, args.scaling_trials, "random", 0, warm_start=False)
        result = run_study(spec, workers, f"sqlite:///{args.db_dir}/{args.task}-{name}.db", name)
        result["gpu_busy"] = busy.share(result["t_loaded"], result["t_done"])
        result["trials_per_hour"] = args.scaling_trials / result["trials_s"] * 3600
        result["tag"] = args.tag
        _merge(rows, result, ("workers", "tag"))
        print(f"scaling: {workers} worker(s) {args.tag}: {result['trials_per_hour']:.0f} trials/h, "
              f"GPU busy {_pct(result['gpu_busy'])}, start {result['start_s']:.1f} s; median s per trial: "
              + ", ".join(f"{k} {v:.3f}" for k, v in step_medians(result["trials"]).items()), flush=True)
        _save(args, out)


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


def phase_baselines(args: argparse.Namespace, busy: Any, out: dict[str, Any]) -> None:
    spec = study_spec(args.task, len(BASELINES), "random", 0, warm_start=True)
    spec["warm_start"]["fractions"] = [1.0]  # the sensitivities are what is wanted here
    wanted = list(BASELINES)
    result = run_study(spec, 1, f"sqlite:///{args.db_dir}/{args.task}-baselines.db", "baselines", enqueue=wanted)
    out["baselines"] = [t for t in result["trials"] if t.get("baseline") in dict(BASELINES)]
    _save(args, out)
    for t in out["baselines"]:
        v = t.get("values") or {}
        print(f"baseline {t['baseline']}: {v}", flush=True)


def phase_samplers(args: argparse.Namespace, busy: Any, out: dict[str, Any]) -> None:
    """One driver process per (sampler, seed), all joined to this process's Ray runtime."""
    import ray

    address = ray.get_runtime_context().gcs_address
    procs = []
    t0 = time.monotonic()
    runs_wanted = [(sampler, seed, warm) for seed in args.seeds for sampler in args.samplers
                   for warm in ([True, False] if sampler in args.warm and sampler in args.cold
                                else [sampler in args.warm])]
    for sampler, seed, warm in runs_wanted:
        label = f"{sampler}{'+warm' if warm else ''}"
        part = Path(args.db_dir) / f"{args.task}-{label}-{seed}.json"
        cmd = [sys.executable, __file__, "_one", "--device", args.device, "--warm", str(int(warm)),
               "--task-options", json.dumps(OVERRIDES["task_options"]), "--task", args.task, "--sampler", sampler, "--seed", str(seed),
               "--trials", str(args.trials), "--workers", str(args.sampler_workers), "--address", address,
               "--db-dir", args.db_dir, "--part", str(part),
               "--sharers", str(len(runs_wanted))]
        procs.append((label, seed, part, subprocess.Popen(cmd)))
    runs = out.setdefault("samplers", [])
    pending = list(procs)
    while pending:  # in the order they finish, each saved at once
        finished = [p for p in pending if p[3].poll() is not None]
        if not finished:
            time.sleep(1.0)
            continue
        sampler, seed, part, proc = finished[0]
        pending.remove(finished[0])
        if part.exists():
            result = json.loads(part.read_text())
            result["gpu_busy"] = busy.share(result["t_loaded"], result["t_done"])
            _merge(runs, {"sampler": sampler, "seed": seed, **result}, ("sampler", "seed"))
            print(f"sampler {sampler} seed {seed}: {len(result['trials'])} trials in {result['trials_s']:.0f} s",
                  flush=True)
            _save(args, out)
        else:
            print(f"sampler {sampler} seed {seed}: failed (exit {proc.returncode})", flush=True)
    out["samplers_wall_s"] = time.monotonic() - t0
    _save(args, out)


def cmd_one(args: argparse.Namespace) -> None:
    """One sampler study (a child process of the samplers phase)."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    from paretoml.service.ray_runtime import RayOptions, start_ray

    start_ray(RayOptions(address=args.address))
    spec = study_spec(args.task, args.trials, args.sampler, args.seed, warm_start=bool(args.warm))
    name = f"{args.sampler}{'+warm' if args.warm else ''}-{args.seed}"
    result = run_study(spec, args.workers, f"sqlite:///{args.db_dir}/{args.task}-{name}.db", name,
                       sharers=args.sharers)
    # time.monotonic is one clock for the whole machine (Linux), so the parent can place
    # this run's t_loaded / t_done among its GPU-busy readings
    Path(args.part).write_text(json.dumps(result))


def cmd_merge(args: argparse.Namespace) -> None:
    """One results file from the files of several runs (calls on the lent machine), and from
    the databases of sampler studies cut short (by the device time): their trials are read
    from storage, so they have no suggestion times and no GPU-busy share."""
    import optuna

    out: dict[str, Any] = {}
    for path in args.json:
        part = json.loads(Path(path).read_text())
        for key, value in part.items():
            if key == "scaling":
                for row in value:
                    _merge(out.setdefault("scaling", []), row, ("workers", "tag"))
            elif key == "samplers":
                for row in value:
                    _merge(out.setdefault("samplers", []), row, ("sampler", "seed"))
            elif key == "phase_s":
                out.setdefault("phase_s", {}).update(value)
            elif value or key not in out:
                out[key] = value
    for item in args.db:
        label, seed, path = item.split(":", 2)
        url = f"sqlite:///{Path(path).resolve()}"
        study = optuna.load_study(study_name=None, storage=url)
        trials = trial_rows(study, {})
        times = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
        span = (max(t.datetime_complete for t in times) - min(t.datetime_start for t in times)).total_seconds()
        _merge(out.setdefault("samplers", []),
               {"sampler": label, "seed": int(seed), "trials": trials, "trials_s": span, "gpu_busy": None,
                "from_storage": True}, ("sampler", "seed"))
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _save(args: argparse.Namespace, out: dict[str, Any]) -> None:
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.task}.json").write_text(json.dumps(out, indent=1, default=str))


def cmd_run(args: argparse.Namespace) -> None:
    import torch

    from _gpu_busy import GpuBusy
    from _machine import machine
    from paretoml.service.ray_runtime import RayOptions, start_ray

    Path(args.db_dir).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"{args.task}.json"
    out: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    out.update({"task": args.task, "machine": f"{gpu}; {machine()}; torch {torch.__version__}"})
    start_ray(RayOptions(temp_dir=args.ray_dir))
    with GpuBusy() as busy:
        out["gpu_busy_source"] = busy.source
        for phase in args.phases:
            t0 = time.monotonic()
            {"scaling": phase_scaling, "baselines": phase_baselines, "samplers": phase_samplers}[phase](args, busy, out)
            out.setdefault("phase_s", {})[phase] = time.monotonic() - t0
            _save(args, out)
            print(f"phase {phase}: {time.monotonic() - t0:.0f} s", flush=True)


# -- report ---------------------------------------------------------------------------------
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--task", default="minilm", choices=sorted(TASK_OPTIONS))
    run.add_argument("--phases", nargs="+", default=["scaling", "baselines", "samplers"],
                     choices=["scaling", "baselines", "samplers"])
    run.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    run.add_argument("--scaling-trials", type=int, default=48)
    run.add_argument("--samplers", nargs="+", default=SAMPLERS)
    run.add_argument("--seeds", type=int, nargs="+", default=[0])
    run.add_argument("--trials", type=int, default=200)
    run.add_argument("--sampler-workers", type=int, default=2)
    run.add_argument("--warm", nargs="*", default=["xgboost"],
                     help="samplers whose studies start from the sensitivity warm start")
    run.add_argument("--cold", nargs="*", default=[],
                     help="of --warm, those also run without it (both studies)")
    run.add_argument("--tag", default="", help="a label of the scaling rows (e.g. 'MPS')")
    run.add_argument("--out", required=True)
    run.add_argument("--db-dir", default="/tmp/gpu-study")
    run.add_argument("--ray-dir", default="/tmp/ray-gs")
    one = sub.add_parser("_one")
    for p in (run, one):
        p.add_argument("--device", default="cuda", help="measure.device of the studies (cpu: a dry run)")
        p.add_argument("--task-options", default="{}", help="JSON overriding the task options (a dry run)")
    for flag, kind in (("--task", str), ("--sampler", str), ("--seed", int), ("--trials", int), ("--workers", int),
                       ("--address", str), ("--db-dir", str), ("--part", str), ("--sharers", int),
                       ("--warm", int)):
        one.add_argument(flag, type=kind, required=True)
    merge = sub.add_parser("merge")
    merge.add_argument("out")
    merge.add_argument("--json", nargs="+", default=[])
    merge.add_argument("--db", nargs="*", default=[], help="LABEL:SEED:PATH of a study's SQLite file")
    rep = sub.add_parser("report")
    rep.add_argument("json")
    rep.add_argument("--md")
    rep.add_argument("--html")
    args = parser.parse_args()
    if args.command in ("run", "_one"):
        OVERRIDES.update(device=args.device, task_options=json.loads(args.task_options))
    {"run": cmd_run, "_one": cmd_one, "merge": cmd_merge, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
