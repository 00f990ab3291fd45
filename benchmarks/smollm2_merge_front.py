"""The merged front of SmolLM2's docs and code specialists against the usual merges.

Loads task ``smollm2-merge`` (the specialists made on first use, or by ``paretoml
make-checkpoints``), then scores on the validation windows, every point by the same
evaluator (merge, then the task's perplexity per domain; no deployment, no timing):

* both specialists, their uniform average, and task arithmetic
  ``base + lam * (tau_docs + tau_code)`` for 11 values of ``lam`` in [0, 1] (0: the base);
* an Optuna study (TPE, multi-objective) over per-block merge coefficients (each decoder
  block and the tied embedding, two specialists each) for ``--trials`` trials, minimising
  (perplexity docs, perplexity code); its first trials are no baselines.

Prints and writes the hypervolume of each set over (ppl docs, ppl code), the reference point
the worst value of either objective over all points times 1.05, and the search's front
joined with the baselines' (what a user would keep), with the seconds per trial.

    python benchmarks/smollm2_merge_front.py --trials 20 --out benchmarks/results/smollm2-merge-dev-2cores.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import optuna

from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
from paretoml.objectives.tasks.domain_lm import perplexity_metric
from paretoml.objectives.tasks.smollm2_merge import SmolLM2MergeOptions, SmolLM2MergeTask
from paretoml.search_space.knobs import LayerSelector, MergeKnob
from paretoml.search_space.space import JointSpace, TrialConfig
from paretoml.surrogates.pareto import hypervolume, non_dominated

from _machine import machine

OBJECTIVES = (perplexity_metric("docs"), perplexity_metric("code"))
KNOBS = [MergeKnob(layers=LayerSelector(kinds=["linear"], include=r"model\.layers\."), group="block", block_depth=3),
         MergeKnob(layers=LayerSelector(kinds=["linear", "embedding"], include="(lm_head|embed_tokens)$"),
                   group="shared")]


def score(ev: TrialEvaluator, merge: dict[str, tuple[float, ...]]) -> dict[str, float]:
    model, _ = ev.build(TrialConfig(merge=merge))
    return ev.score(model, [*OBJECTIVES, perplexity_metric("general")])


def everywhere(ev: TrialEvaluator, value: tuple[float, float]) -> dict[str, tuple[float, ...]]:
    return {layer.name: value for layer in ev.layers}


def baselines(ev: TrialEvaluator) -> dict[str, dict[str, float]]:
    points = {"specialist docs": (1.0, 0.0), "specialist code": (0.0, 1.0), "uniform average": (0.5, 0.5)}
    points.update({f"task arithmetic {lam:.1f}": (lam, lam) for lam in np.linspace(0.0, 1.0, 11)})
    out = {}
    for name, value in points.items():
        t0 = time.perf_counter()
        out[name] = {**score(ev, everywhere(ev, value)), "seconds": time.perf_counter() - t0}
        print(f"{name:24s} " + "  ".join(f"{k} {v:.3f}" for k, v in out[name].items()), flush=True)
    return out


def search(ev: TrialEvaluator, trials: int, seed: int, budget_s: float | None = None) -> list[dict[str, float]]:
    space = JointSpace(KNOBS, ev.layers, n_checkpoints=ev.n_checkpoints)
    study = optuna.create_study(directions=["minimize"] * len(OBJECTIVES),
                                sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
    rows: list[dict[str, float]] = []
    started = time.perf_counter()
    for number in range(trials):
        if budget_s is not None and time.perf_counter() - started > budget_s:
            print(f"budget of {budget_s:.0f} s spent after {number} trials", flush=True)
            break
        trial = study.ask()
        t0 = time.perf_counter()
        values = score(ev, space.suggest(trial).merge)
        study.tell(trial, [values[o] for o in OBJECTIVES])
        rows.append({**values, "seconds": time.perf_counter() - t0})
        print(f"trial {number:3d} " + "  ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()), flush=True)
    print(f"{len(space.param_names)} merge parameters", flush=True)
    return rows


def losses(rows: list[dict[str, float]]) -> np.ndarray:
    return np.array([[r[o] for o in OBJECTIVES] for r in rows], dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--windows", type=int, default=2, help="validation windows per domain")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--budget-s", type=float, default=None, help="stop the search after this many seconds")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    options = SmolLM2MergeOptions(context=args.context, n_validation=args.windows, n_test=0, n_prompts=0,
                                  batch_size=4)
    ev = TrialEvaluator(SmolLM2MergeTask(options), MeasureSettings(), "cpu")
    load_s = time.perf_counter() - t0
    fixed = baselines(ev)
    found = search(ev, args.trials, args.seed, args.budget_s)
    everything = losses(list(fixed.values()) + found)
    reference = everything.max(axis=0) * 1.05
    sets = {"specialists": ["specialist docs", "specialist code"], "uniform average": ["uniform average"],
            "task arithmetic (11)": [k for k in fixed if k.startswith("task arithmetic")],
            "all baselines": list(fixed)}
    volumes = {name: hypervolume(losses([fixed[k] for k in keys]), reference) for name, keys in sets.items()}
    volumes[f"search ({len(found)} trials)"] = hypervolume(losses(found), reference)
    volumes["search + all baselines"] = hypervolume(everything, reference)
    front = losses(found)[non_dominated(losses(found))]
    result = {"machine": machine(), "load_average": os.getloadavg(), "options": options.model_dump(),
              "reference_point": reference.tolist(), "hypervolume": volumes, "baselines": fixed, "trials": found,
              "search_front": front.tolist(), "load_s": load_s,
              "seconds_per_trial_median": float(np.median([r["seconds"] for r in found])) if found else None}
    print(machine(), f"load average {os.getloadavg()}")
    for name, value in volumes.items():
        print(f"HV {name:28s} {value:.4f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
