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

The report and its figure are in ``gpu_study_report.py``.

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
from optuna.trial import TrialState

from paretoml.search_space.trial_attrs import (
    BASELINE_ATTR,
    KERNELS_ATTR,
    PROVENANCE_ATTR,
    TIMINGS_ATTR,
    WORKER_ATTR,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_study_report import OBJECTIVES, _pct, cmd_report, step_medians  # noqa: E402 (benchmarks/ on the path first)

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
    with RayPoolExecutor(spec, workers=workers, num_cpus=1, num_gpus="auto", gpu_sharers=sharers) as pool:
        runner = StudyRunner.create(spec, open_durable_storage(url), name, pool)
        t_loaded = time.monotonic()
        extra: dict[str, Any] = {}
        budget = None
        if enqueue is not None:
            enqueue[:] = enqueue_from(runner, enqueue)
            extra["configs"] = [label for label, _ in enqueue]
            budget = len(runner.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))  # the queue only
        runner.run(budget=budget)
        t_done = time.monotonic()
        share = pool.share
    trials = trial_rows(runner.study)
    return {"workers": workers, "gpu_share": share, "start_s": t_loaded - t0, "trials_s": t_done - t_loaded,
            "t_loaded": t_loaded, "t_done": t_done, "trials": trials, **extra}


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """Every trial of a study as the report reads it: state, values, step timings, how the
    latency was measured, the kernels that ran, the worker, duration and suggestion time
    (the runner's ``suggest_s``: ask plus the knobs' suggestions and their storage writes)."""
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
        row["suggest_s"] = t.user_attrs.get(TIMINGS_ATTR, {}).get("suggest_s")
        trials.append(row)
    return trials


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
        trials = trial_rows(study)
        times = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
        span = (max(t.datetime_complete for t in times) - min(t.datetime_start for t in times)).total_seconds()
        _merge(out.setdefault("samplers", []),
               {"sampler": label, "seed": int(seed), "trials": trials, "trials_s": span, "gpu_busy": None,
                "from_storage": True}, ("sampler", "seed"))
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))


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
