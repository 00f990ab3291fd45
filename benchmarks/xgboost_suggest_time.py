"""Time per suggestion of the XGBoost sampler at 1,000 completed trials with 40 knobs
(20 bitwidth choices, 20 pruning ratios), 2 objectives: the median of 10 suggestions.

Usage: python benchmarks/xgboost_suggest_time.py [--trials 1000] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import optuna
from _machine import machine

from paretoml.surrogates.xgboost_sampler import XGBoostSampler

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    for i in range(20):
        dists[f"bits:layer{i}"] = optuna.distributions.CategoricalDistribution([2, 3, 4, 6, 8, 16])
        dists[f"prune:layer{i}"] = optuna.distributions.FloatDistribution(0.0, 0.9)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=XGBoostSampler(seed=0))
    trials = []
    for _ in range(args.trials):
        params = {k: (d.choices[rng.integers(len(d.choices))] if isinstance(d, optuna.distributions.CategoricalDistribution)
                      else float(rng.random() * 0.9)) for k, d in dists.items()}
        bits = np.mean([params[f"bits:layer{i}"] for i in range(20)])
        trials.append(optuna.create_trial(params=params, distributions=dists, values=[bits / 16 + rng.normal(0, .05),
                                                                                      bits * 1000]))
    study.add_trials(trials)
    times = []
    for _ in range(args.repeats):
        trial = study.ask()
        start = time.perf_counter()
        for name, dist in dists.items():
            trial._suggest(name, dist)
        times.append(time.perf_counter() - start)
        study.tell(trial, [0.5, 5000.0])
    print(f"machine: {machine()}")
    print(f"XGBoost sampler, {args.trials} completed trials, {len(dists)} knobs, 2 objectives: "
          f"median {statistics.median(times) * 1e3:.0f} ms per suggestion "
          f"(min {min(times) * 1e3:.0f}, max {max(times) * 1e3:.0f}, {args.repeats} suggestions)")


if __name__ == "__main__":
    main()
