"""Early stopping: the same study with and without a pruner, median over seeds.

Runs a digits-cnn study with fine-tuning (bits, structured pruning and the fine-tune
learning rate searched, accuracy vs packed bytes) in this process, once per seed and
pruner, and prints a Markdown table: the front's hypervolume (against the uncompressed
model's reference point, as the service stores it), the evaluation time (the sum of the
trials' wall times) and how many trials were stopped. Both studies spend the same number of
trials (a pruned trial counts towards ``n_trials``).

    python benchmarks/early_stopping.py --seeds 5 --trials 24 --steps 60
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.trial import TrialState

from paretoml.search_space.spec import parse_spec
from paretoml.service.executors.inprocess import InProcessExecutor
from paretoml.service.frontier import reference_point
from paretoml.service.runner import StudyRunner
from paretoml.surrogates.pareto import loss_signs

from _machine import machine


def spec(seed: int, trials: int, steps: int, pruner: dict) -> dict:
    return {
        "task": "digits-cnn",
        "knobs": [{"kind": "bitwidth", "choices": [2, 3, 4, 6, 8]},
                  {"kind": "prune", "method": "structured", "high": 0.75, "step": 0.125},
                  {"kind": "learning_rate", "base_lr": 1e-3, "base_lr_range": [1e-4, 3.0]}],
        "objectives": [{"name": "accuracy"}, {"name": "model_bytes"}],
        "sampler": {"name": "tpe", "options": {"n_startup_trials": 8, "multivariate": True}},
        "finetune": {"steps": steps},
        "pruner": pruner,
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": trials,
        "seed": seed,
    }


def hypervolume(study: optuna.Study, reference: dict) -> float:
    point = reference_point(study.directions, study.metric_names, reference)
    assert point is not None
    losses = np.array([t.values for t in study.best_trials], dtype=float) * loss_signs(study.directions)
    inside = losses[np.all(losses < point, axis=1)]
    return float(compute_hypervolume(inside, point)) if len(inside) else 0.0


def run_one(seed: int, trials: int, steps: int, pruner: dict, folder: Path) -> dict:
    model = parse_spec(spec(seed, trials, steps, pruner))
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
            "pruned": sum(t.state == TrialState.PRUNED for t in finished)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--pruner", default="successive-halving")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruned_spec = {"name": args.pruner, "options": {"min_trials": 4} if args.pruner != "median" else {}}
    rows: dict[str, list[dict]] = {"none": [], args.pruner: []}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            for name, pruner in (("none", {"name": "none"}), (args.pruner, pruned_spec)):
                rows[name].append(run_one(seed, args.trials, args.steps, pruner, Path(folder)))
                print(f"seed {seed} {name}: {rows[name][-1]}", flush=True)
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in rows.items()}
    base, early = med["none"], med[args.pruner]
    print(f"\n{machine()}")
    print(f"digits-cnn, {args.trials} trials, finetune {args.steps} steps, TPE, median of {args.seeds} seeds\n")
    print("| pruner | hypervolume | evaluation s | trials stopped |")
    print("|---|---|---|---|")
    for name in rows:
        m = med[name]
        print(f"| {name} | {m['hv']:.1f} | {m['eval_s']:.1f} | {m['pruned']:.0f} |")
    print(f"\nhypervolume kept: {early['hv'] / base['hv']:.3f} of the unpruned study's; "
          f"evaluation time: {early['eval_s'] / base['eval_s']:.3f} of it")


if __name__ == "__main__":
    main()
