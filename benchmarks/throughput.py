"""Trial throughput of the Ray pool against its number of workers.

Each trial of the `synthetic` task burns ``--busy-ms`` of CPU time (default 500 ms), so
the ideal speed-up of N workers is N while the machine has N free cores. Storage is the
durable mirrored SQLite storage the CLI uses. Pool start-up (each worker loading the task)
is reported apart from the trial time.

Usage: python benchmarks/throughput.py [--workers 1 2 4] [--trials 32] [--busy-ms 500]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import optuna
from _machine import machine

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)


def run(workers: int, trials: int, busy_ms: float, url: str) -> tuple[float, float]:
    from paretoml.service.executors.ray_pool import RayPoolExecutor
    from paretoml.service.runner import StudyRunner
    from paretoml.service.spec import parse_spec
    from paretoml.service.storage import open_durable_storage

    spec = parse_spec({
        "task": "synthetic",
        "task_options": {"busy_ms": busy_ms},
        "knobs": [{"kind": "bitwidth", "choices": [2, 4, 8]}, {"kind": "prune", "high": 0.9}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
        "sampler": {"name": "tpe"},
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": trials,
    })
    start = time.perf_counter()
    with RayPoolExecutor(spec, workers=workers, num_cpus=1) as executor:
        runner = StudyRunner.create(spec, open_durable_storage(url), f"w{workers}", executor)
        started = time.perf_counter()
        runner.run()
        done = time.perf_counter()
    return started - start, done - started


def main() -> None:
    import ray

    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--busy-ms", type=float, default=500.0)
    args = parser.parse_args()
    ray.init(num_cpus=max(max(args.workers), os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            startup, wall = run(workers, args.trials, args.busy_ms, f"sqlite:///{tmp}/t.db")
            rows.append((workers, startup, wall))
    ray.shutdown()
    print(f"machine: {machine()}")
    print(f"\n## Throughput: {args.trials} trials of {args.busy_ms:.0f} ms CPU each, TPE, durable SQLite\n")
    print("| workers | pool start s | trials wall s | trials / s | speed-up vs 1 worker |")
    print("|---:|---:|---:|---:|---:|")
    base = next((wall for w, _, wall in rows if w == 1), rows[0][2])
    for workers, startup, wall in rows:
        print(f"| {workers} | {startup:.1f} | {wall:.1f} | {args.trials / wall:.2f} | {base / wall:.2f}x |")
    print(f"\ncores on this machine: {os.cpu_count()}; ideal trial wall for 1 worker: "
          f"{args.trials * args.busy_ms / 1000:.1f} s")


if __name__ == "__main__":
    main()
