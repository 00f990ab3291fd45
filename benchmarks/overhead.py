"""Per-trial overheads, printed as one table from one run.

1. Dispatch: 500 trials of a trivial objective (random search, so the sampler costs next
   to nothing). Plain Optuna in memory; ParetoML's runner in process and on its Ray pool
   (the `synthetic` task: one forward pass of a tiny MLP per trial); Ray Tune's `Tuner`
   with a function trainable. Dispatch overhead = Ray pool minus in-process, per trial.
2. Storage: 1,000 trials of TPE, 2 objectives, 21 float parameters, the same seed for all,
   so every storage sees the same suggestions: Optuna in memory, ParetoML's mirrored
   durable storage on SQLite, Optuna's RDBStorage on SQLite.

Usage: python benchmarks/overhead.py [--dispatch-trials 500] [--tune-trials 100]
       [--storage-trials 1000] [--skip-tune] [--skip-rdb]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import optuna
from _machine import machine

from paretoml.surrogates.optuna_compat import trial_id

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)


def synthetic_spec(n: int) -> dict:
    return {
        "task": "synthetic",
        "knobs": [{"kind": "float", "name": "x", "low": -1, "high": 1}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
        "sampler": {"name": "random"},
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": n,
    }


def bench_optuna_memory(n: int) -> float:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    start = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=n)
    return time.perf_counter() - start


def bench_paretoml(n: int, executor_kind: str, workers: int) -> float:
    from paretoml.service.executors import create_executor
    from paretoml.service.runner import StudyRunner
    from paretoml.service.spec import parse_spec

    spec = parse_spec(synthetic_spec(n))
    options = {"num_cpus": 0.5} if executor_kind == "ray" else {}
    with create_executor(executor_kind, spec, workers, **options) as executor:
        runner = StudyRunner.create(spec, optuna.storages.InMemoryStorage(), "bench", executor)
        start = time.perf_counter()  # workers are up and hold the model: count trials only
        runner.run()
        return time.perf_counter() - start


def bench_tune(n: int) -> float:
    from ray import tune

    def trainable(config: dict) -> dict:
        return {"score": config["x"] ** 2}

    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(
            trainable,
            param_space={"x": tune.uniform(-1, 1)},
            tune_config=tune.TuneConfig(num_samples=n, metric="score", mode="min"),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0),
        )
        start = time.perf_counter()
        tuner.fit()
        return time.perf_counter() - start


def tpe_objective(trial: optuna.Trial) -> tuple[float, float]:
    xs = [trial.suggest_float(f"x{i}", 0, 1) for i in range(21)]
    return sum(xs), sum((1 - x) ** 2 for x in xs)


def bench_storage(n: int, storage: object | None) -> float:
    study = optuna.create_study(storage=storage, study_name="s", directions=["minimize", "minimize"],
                                sampler=optuna.samplers.TPESampler(seed=0))
    flush = getattr(storage, "flush", None)
    start = time.perf_counter()
    for _ in range(n):
        trial = study.ask()
        values = tpe_objective(trial)
        if flush:
            flush(trial_id(trial))
        study.tell(trial, values)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dispatch-trials", type=int, default=500)
    parser.add_argument("--tune-trials", type=int, default=100)
    parser.add_argument("--storage-trials", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--skip-tune", action="store_true")
    parser.add_argument("--skip-rdb", action="store_true")
    args = parser.parse_args()

    import ray

    from paretoml.service.storage import open_durable_storage

    rows: list[tuple[str, int, float]] = []
    n = args.dispatch_trials
    rows.append(("plain Optuna, in memory, trivial objective", n, bench_optuna_memory(n)))
    rows.append(("ParetoML runner, in process (synthetic task)", n, bench_paretoml(n, "inprocess", 1)))
    ray.init(num_cpus=max(os.cpu_count() or 1, args.workers), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    rows.append(("ParetoML Ray pool, 1 worker", n, bench_paretoml(n, "ray", 1)))
    rows.append((f"ParetoML Ray pool, {args.workers} workers", n, bench_paretoml(n, "ray", args.workers)))
    ray.shutdown()
    if not args.skip_tune:
        rows.append(("Ray Tune Tuner, function trainable", args.tune_trials, bench_tune(args.tune_trials)))
        ray.shutdown()

    print(f"machine: {machine()}")
    print("\n## Dispatch: trivial trials, random search\n")
    print("| system | trials | wall s | ms / trial |\n|---|---:|---:|---:|")
    per = {}
    for name, count, wall in rows:
        per[name] = wall / count * 1e3
        print(f"| {name} | {count} | {wall:.2f} | {per[name]:.2f} |")
    dispatch = per["ParetoML Ray pool, 1 worker"] - per["ParetoML runner, in process (synthetic task)"]
    print(f"\nRay pool dispatch overhead (1 worker minus in process): {dispatch:.2f} ms per trial")

    m = args.storage_trials
    print(f"\n## Storage: {m} trials, TPE, 2 objectives, 21 parameters, seed 0\n")
    with tempfile.TemporaryDirectory() as tmp:
        results = [("Optuna InMemoryStorage", bench_storage(m, None)),
                   ("ParetoML mirrored storage on SQLite (durable)",
                    bench_storage(m, open_durable_storage(f"sqlite:///{tmp}/mirror.db")))]
        if not args.skip_rdb:
            results.append(("Optuna RDBStorage on SQLite", bench_storage(m, f"sqlite:///{tmp}/rdb.db")))
    base = results[0][1]
    print("| storage | wall s | ms / trial | vs in memory |\n|---|---:|---:|---:|")
    for name, wall in results:
        print(f"| {name} | {wall:.1f} | {wall / m * 1e3:.1f} | {wall / base:.2f}x |")


if __name__ == "__main__":
    main()
