"""Early stopping: the same study with and without a pruner, median over seeds.

Two tasks:

* ``digits-cnn`` with fine-tuning (bits, structured pruning and the fine-tune learning rate
  searched, accuracy vs packed bytes); rungs over fine-tune steps by default.
* ``minilm`` (no fine-tuning: bits per block and head / FFN-neuron pruning searched,
  embedding fidelity vs packed bytes); rungs over evaluation size, i.e. growing prefixes
  of the validation split (``--n-validation`` sentences).

Each study runs in this process, once per seed and arm, the arms interleaved per seed (in
alternating order, so the process's first-run warm-up is not always charged to one arm); the
script prints a Markdown table: the front's hypervolume (against the uncompressed model's
reference point, as the service stores it), the evaluation time (the sum of the trials'
wall times) and how many trials were stopped. Both arms spend the same number of trials (a
pruned trial counts towards ``n_trials``). A second figure reads the goal as "the same
hypervolume (within 1%) for a fraction of the time": the evaluation time each arm spent
until its front first reached 99% of the unpruned study's final hypervolume, as a fraction
of the unpruned study's whole evaluation time (for both arms, so that a front found early
by the search itself is not credited to the pruner).

    python benchmarks/early_stopping.py --task digits-cnn --seeds 5 --trials 16 --steps 600
    python benchmarks/early_stopping.py --task minilm --seeds 3 --trials 30 --n-validation 512 \\
        --rungs 0.125 0.25
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from paretoml.service.executors.inprocess import InProcessExecutor
from paretoml.service.frontier import reference_point
from paretoml.service.runner import StudyRunner
from paretoml.service.spec import parse_spec
from paretoml.surrogates import pareto
from paretoml.surrogates.pareto import loss_signs

from _machine import machine


def digits_spec(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "task": "digits-cnn",
        "knobs": [{"kind": "bitwidth", "choices": [2, 3, 4, 6, 8]},
                  {"kind": "prune", "method": "structured", "high": 0.75, "step": 0.125},
                  {"kind": "learning_rate", "base_lr": 1e-3, "base_lr_range": [1e-4, 3.0]}],
        "objectives": [{"name": "accuracy"}, {"name": "model_bytes"}],
        "finetune": {"steps": args.steps},
    }


def minilm_spec(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "task": "minilm",
        "task_options": {"n_calibration": 16, "n_validation": args.n_validation, "n_test": 0, "latency_batch": 8},
        "knobs": [
            {"kind": "bitwidth", "layers": {"kinds": ["linear"]}, "group": "block", "choices": [2, 3, 4, 6, 8]},
            {"kind": "bitwidth", "layers": {"kinds": ["embedding"], "include": "word_embeddings"},
             "choices": [4, 8]},
            {"kind": "prune", "method": "structured",
             "layers": {"include": "attention\\.self\\.query|intermediate\\.dense"},
             "low": 0.0, "high": 0.5, "step": 0.125},
        ],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
    }


TASKS = {"digits-cnn": digits_spec, "minilm": minilm_spec}


def spec(args: argparse.Namespace, seed: int, pruner: dict[str, Any]) -> dict[str, Any]:
    return {
        **TASKS[args.task](args),
        "sampler": {"name": "tpe", "options": {"n_startup_trials": 8, "multivariate": True}},
        "pruner": pruner,
        "measure": {"latency_repeats": 1, "latency_warmup": 0, "device": args.device},
        "n_trials": args.trials,
        "seed": seed,
    }


def hypervolume(study: optuna.Study, reference: dict, trials: list[FrozenTrial] | None = None) -> float:
    """The hypervolume of the complete trials' front (of ``trials``, default all of them)."""
    point = reference_point(study.directions, study.metric_names, reference)
    assert point is not None
    trials = study.best_trials if trials is None else [t for t in trials if t.state == TrialState.COMPLETE]
    if not trials:
        return 0.0
    losses = np.array([t.values for t in trials], dtype=float) * loss_signs(study.directions)
    return pareto.hypervolume(losses, point)


def progress(study: optuna.Study, reference: dict) -> list[tuple[float, float]]:
    """(evaluation seconds spent so far, hypervolume so far) after each finished trial."""
    finished = sorted(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)),
                      key=lambda t: t.datetime_complete)
    spent, curve = 0.0, []
    for k, t in enumerate(finished):
        spent += (t.datetime_complete - t.datetime_start).total_seconds()
        curve.append((spent, hypervolume(study, reference, finished[: k + 1])))
    return curve


def time_to(curve: list[tuple[float, float]], target: float) -> float:
    """Evaluation seconds until the hypervolume first reached ``target`` (inf: never)."""
    return next((spent for spent, hv in curve if hv >= target), math.inf)


def run_one(args: argparse.Namespace, seed: int, pruner: dict[str, Any], folder: Path) -> dict[str, float]:
    model = parse_spec(spec(args, seed, pruner))
    url = f"sqlite:///{folder / (pruner['name'] + f'-{seed}.db')}"
    with InProcessExecutor(model) as executor:
        runner = StudyRunner.create(model, optuna.storages.RDBStorage(url), "s", executor)
        t0 = time.perf_counter()
        runner.run()
        wall = time.perf_counter() - t0
    study = runner.study
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    eval_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in finished)
    return {"hv": hypervolume(study, runner.model.reference), "eval_s": eval_s, "wall_s": wall,
            "pruned": sum(t.state == TrialState.PRUNED for t in finished),
            "curve": progress(study, runner.model.reference)}


def pruner_spec(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.pruner in ("successive-halving", "hyperband"):
        options = {"min_trials": args.min_trials, "reduction_factor": args.reduction_factor}
    over = args.over or ("finetune" if args.task == "digits-cnn" else "evaluation")
    block: dict[str, Any] = {"name": args.pruner, "options": options, "over": over}
    if args.rungs:
        block["rungs"] = args.rungs
    return block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="digits-cnn")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--steps", type=int, default=60, help="digits-cnn: fine-tune steps")
    parser.add_argument("--n-validation", type=int, default=512, help="minilm: validation sentences")
    parser.add_argument("--pruner", default="successive-halving")
    parser.add_argument("--over", choices=["finetune", "evaluation"], default=None,
                        help="the rungs' fidelity (default: finetune for digits-cnn, evaluation for minilm)")
    parser.add_argument("--rungs", type=float, nargs="+", default=None, help="rung fractions (default: the spec's)")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--min-trials", type=int, default=4)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruned = pruner_spec(args)
    rows: dict[str, list[dict[str, float]]] = {"none": [], args.pruner: []}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            arms = [("none", {"name": "none"}), (args.pruner, pruned)]
            for name, pruner in arms if seed % 2 == 0 else arms[::-1]:  # neither arm always goes first
                rows[name].append(run_one(args, seed, pruner, Path(folder)))
            # time to the hypervolume within 1% of the unpruned study's final one, as a
            # fraction of the unpruned study's whole evaluation time
            base_run = rows["none"][-1]
            target = 0.99 * base_run["hv"]
            for name in rows:
                row = rows[name][-1]
                row["to_target"] = time_to(row.pop("curve"), target) / base_run["eval_s"]
                print(f"seed {seed} {name}: {row}", flush=True)
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in rows.items()}
    base, early = med["none"], med[args.pruner]
    fidelity = (f"finetune {args.steps} steps" if args.task == "digits-cnn"
                else f"{args.n_validation} validation sentences, no fine-tuning")
    print(f"\n{machine()}, device {args.device}")
    print(f"{args.task}, {args.trials} trials, {fidelity}, TPE, pruner {pruned}, median of {args.seeds} seeds\n")
    print("| pruner | hypervolume | evaluation s | trials stopped | time to HV within 1% (of unpruned total) |")
    print("|---|---|---|---|---|")
    for name in rows:
        m = med[name]
        print(f"| {name} | {m['hv']:.6g} | {m['eval_s']:.1f} | {m['pruned']:.0f} | {m['to_target']:.3f} |")
    print(f"\nsame trial budget: hypervolume kept {early['hv'] / base['hv']:.3f} of the unpruned study's "
          f"for {early['eval_s'] / base['eval_s']:.3f} of its evaluation time")
    print(f"time to a hypervolume within 1% of the unpruned study's final one: {early['to_target']:.3f} of the "
          f"unpruned study's evaluation time with pruning, {base['to_target']:.3f} without (medians)")


if __name__ == "__main__":
    main()
