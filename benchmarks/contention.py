"""The thread budget under a shared machine (issue 22, item 1).

(a) The digits-cnn demo (``studies/digits_cnn.yaml`` cut to ``--trials`` trials), run by the
    CLI as a user runs it, on the machine as it is ("idle") and beside one CPU-bound
    process (a busy-loop child), with the thread budget on (the default) and off
    (``--threads <cores>``: every pool takes all cores, what torch and XGBoost did before
    the budget). The four cells are alternated, in a rotating order, ``--reps`` times;
    medians are reported. Goal: beside a busy process, at most 1.5x the idle time.
(b) Trials per hour of 1 and of 2 Ray workers (``num_cpus=1`` each) on the same demo,
    budget on and off (``threads=<cores>`` per worker), alternated. Goal: 2 workers >= 1.8x
    one worker's trials per hour.

Times are of the study (first trial started to last trial finished, from the storage); the
CLI process's wall time (imports, model load) is reported beside it. The machine's load
average is recorded before every run: other work on the machine moves the absolute times.

Usage: python benchmarks/contention.py [--trials 20] [--reps 3] [--ray-trials 40] [--ray-reps 2]
       [--skip-demo] [--skip-ray] [--out benchmarks/results/contention-dev-2cores]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import yaml
from _machine import machine

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)

ROOT = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1
BUSY_LOOP = "while True: pass"


def demo_spec(trials: int) -> dict:
    spec = yaml.safe_load((ROOT / "studies" / "digits_cnn.yaml").read_text())
    spec["n_trials"] = trials
    return spec


def study_seconds(url: str, name: str) -> tuple[float, int]:
    """First trial start to last trial end, and the trials completed."""
    study = optuna.load_study(study_name=name, storage=url)
    trials = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    return (end - start).total_seconds(), complete


class BusyLoop:
    """One CPU-bound child process, ended (by its pid) when the block ends."""

    def __enter__(self) -> BusyLoop:
        self.process = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait()


def run_demo(spec_path: Path, url: str, name: str, budget: bool, env: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "paretoml.service.cli", "run", str(spec_path), "--storage", url,
               "--study-name", name, "--quiet"]
    if not budget:
        command += ["--threads", str(CORES)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    seconds, complete = study_seconds(url, name)
    return {"study_s": seconds, "process_s": wall, "complete": complete, "load_before": load}


def bench_demo(trials: int, reps: int, tmp: Path) -> list[dict]:
    spec_path = tmp / "demo.yaml"
    spec_path.write_text(yaml.safe_dump(demo_spec(trials)))
    url = f"sqlite:///{tmp / 'demo.db'}"
    env = {**os.environ, "PARETOML_CACHE_DIR": str(tmp / "cache")}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(name, None)  # the machine's defaults, as a user has them
    run_demo(spec_path, url, "warm-up", True, env)  # trains the task's model into the cache
    cells = [(budget, busy) for budget in (True, False) for busy in (False, True)]
    rows = []
    for rep in range(reps):
        order = cells[rep % len(cells):] + cells[:rep % len(cells)]  # rotate: no cell always first
        for budget, busy in order:
            name = f"r{rep}-{'on' if budget else 'off'}-{'busy' if busy else 'idle'}"
            if busy:
                with BusyLoop():
                    row = run_demo(spec_path, url, name, budget, env)
            else:
                row = run_demo(spec_path, url, name, budget, env)
            rows.append({"rep": rep, "budget": budget, "busy": busy, **row})
            print(f"  demo {name}: study {row['study_s']:.1f} s, process {row['process_s']:.1f} s, "
                  f"load {row['load_before']:.2f}", flush=True)
    return rows


def bench_ray(trials: int, reps: int, tmp: Path) -> list[dict]:
    import ray

    from paretoml.objectives.threads import apply_thread_budget
    from paretoml.service.spec import parse_spec
    from paretoml.service.executors.ray_pool import RayPoolExecutor
    from paretoml.service.runner import StudyRunner
    from paretoml.service.storage import open_durable_storage

    os.environ["PARETOML_CACHE_DIR"] = str(tmp / "cache")
    apply_thread_budget(1)  # this process samples, as the CLI's does
    ray.init(num_cpus=CORES, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _temp_dir=tempfile.mkdtemp(prefix="pml-ct-"))
    spec = parse_spec(demo_spec(trials))
    url = f"sqlite:///{tmp / 'ray.db'}"
    cells = [(budget, workers) for budget in (True, False) for workers in (1, 2)]
    rows = []
    try:
        for rep in range(reps):
            order = cells[rep % len(cells):] + cells[:rep % len(cells)]
            for budget, workers in order:
                name = f"r{rep}-{'on' if budget else 'off'}-w{workers}"
                load = os.getloadavg()[0]
                with RayPoolExecutor(spec, workers=workers, num_cpus=1, threads=None if budget else CORES) as pool:
                    runner = StudyRunner.create(spec, open_durable_storage(url), name, pool)
                    start = time.perf_counter()
                    runner.run()
                    wall = time.perf_counter() - start
                seconds, complete = study_seconds(url, name)
                row = {"rep": rep, "budget": budget, "workers": workers, "loop_s": wall, "study_s": seconds,
                       "complete": complete, "trials_per_hour": complete / wall * 3600, "load_before": load}
                rows.append(row)
                print(f"  ray {name}: {wall:.1f} s, {row['trials_per_hour']:.0f} trials/h, load {load:.2f}",
                      flush=True)
    finally:
        ray.shutdown()
    return rows


def median(rows: list[dict], key: str, **where: object) -> float:
    return statistics.median(r[key] for r in rows if all(r[k] == v for k, v in where.items()))


def report(args: argparse.Namespace, demo: list[dict], pool: list[dict], loads: tuple[float, float]) -> str:
    lines = [f"# benchmarks/contention.py on the development machine ({CORES} cores, shared), "
             f"{dt.date.today().isoformat()}", "",
             f"Command: `.venv/bin/python benchmarks/contention.py {' '.join(sys.argv[1:])}`", "",
             f"machine: {machine()}", "",
             f"load average (1 min) at start {loads[0]:.2f}, at end {loads[1]:.2f}; the cores are shared with "
             "other engineers' work, so absolute times move: cells were alternated and medians are shown.", ""]
    if demo:
        lines += [f"## (a) digits-cnn demo, {args.trials} trials, CLI in process, beside one busy-loop process", "",
                  f"Median of {args.reps} alternated runs each; study time = first trial start to last trial end.", "",
                  "| thread budget | idle study s | beside busy study s | busy / idle | idle process s | "
                  "busy process s | load before (median) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for budget in (False, True):
            idle = median(demo, "study_s", budget=budget, busy=False)
            busy = median(demo, "study_s", budget=budget, busy=True)
            label = "on (default: 1 thread)" if budget else f"off (--threads {CORES}: all cores, as before)"
            lines.append(f"| {label} | {idle:.1f} | {busy:.1f} | {busy / idle:.2f}x | "
                         f"{median(demo, 'process_s', budget=budget, busy=False):.1f} | "
                         f"{median(demo, 'process_s', budget=budget, busy=True):.1f} | "
                         f"{median(demo, 'load_before', budget=budget):.2f} |")
        lines += ["", "Goal: beside a busy process at most 1.5x the idle time (budget on).", ""]
    if pool:
        lines += [f"## (b) Ray workers (num_cpus=1 each), digits-cnn demo, {args.ray_trials} trials", "",
                  f"Median of {args.ray_reps} alternated runs each; time of the trial loop (pool start excluded).",
                  "", "| thread budget | 1 worker trials/h | 2 workers trials/h | 2 / 1 | load before (median) |",
                  "|---|---:|---:|---:|---:|"]
        for budget in (False, True):
            one = median(pool, "trials_per_hour", budget=budget, workers=1)
            two = median(pool, "trials_per_hour", budget=budget, workers=2)
            label = "on (1 thread per worker)" if budget else f"off ({CORES} threads per worker)"
            lines.append(f"| {label} | {one:.0f} | {two:.0f} | {two / one:.2f}x | "
                         f"{median(pool, 'load_before', budget=budget):.2f} |")
        lines += ["", "Goal: 2 workers at least 1.8x one worker's trials per hour (budget on).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ray-trials", type=int, default=40)
    parser.add_argument("--ray-reps", type=int, default=2)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    args = parser.parse_args()
    start_load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pml-contention-") as name:
        tmp = Path(name)
        demo = [] if args.skip_demo else bench_demo(args.trials, args.reps, tmp)
        pool = [] if args.skip_ray else bench_ray(args.ray_trials, args.ray_reps, tmp)
    text = report(args, demo, pool, (start_load, os.getloadavg()[0]))
    print("\n" + text)
    if args.out:
        Path(args.out + ".md").write_text(text + "\n")
        Path(args.out + ".json").write_text(json.dumps(
            {"machine": machine(), "cores": CORES, "args": vars(args), "demo": demo, "ray": pool}, indent=1) + "\n")


if __name__ == "__main__":
    main()
