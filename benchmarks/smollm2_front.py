"""A short real ``smollm2`` study on this device, with uniform KV baselines in the same study.

Runs ``studies/smollm2_cpu.yaml`` (or ``--spec``) through the StudyRunner for ``--trials``
trials, its first trials the uniform KV caches K16V16 (the reference's), K8V8, K4V4 and
K8V4 with fp32/bf16 weights, then prints: every trial's objectives, the hypervolume of the
whole front against that of the uniform-KV trials alone (reference point: twice the
uncompressed model's values, the stored frontier's rule), and the fastest front point
within perplexity 1.05x of the reference against the reference's decode time.

    python benchmarks/smollm2_front.py --trials 12 --out benchmarks/results/smollm2-cpu-dev-2cores.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from paretoml.search_space.trial_attrs import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    METRICS_ATTR,
    PROVENANCE_ATTR,
    REFERENCE_ATTR,
)
from paretoml.service.executors.inprocess import InProcessExecutor
from paretoml.service.frontier import reference_point
from paretoml.service.runner import StudyRunner
from paretoml.service.spec import parse_spec
from paretoml.surrogates.pareto import hypervolume as pareto_hypervolume
from paretoml.surrogates.pareto import loss_signs

from _machine import machine

UNIFORM_KV = {"K16V16": (16, 16), "K8V8": (8, 8), "K4V4": (4, 4), "K8V4": (8, 4)}


def hypervolume(losses: np.ndarray, point: np.ndarray) -> float:
    return pareto_hypervolume(losses, point)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="studies/smollm2_cpu.yaml")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--task-options", default="{}", help="JSON merged over the spec's task_options")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    document = yaml.safe_load(Path(args.spec).read_text())
    document["task_options"] = {**document.get("task_options", {}), **json.loads(args.task_options)}
    document["n_trials"] = args.trials
    document["baselines"] = []
    spec = parse_spec(document)
    started = time.perf_counter()
    with InProcessExecutor(spec) as executor:
        runner = StudyRunner.create(spec, optuna.storages.InMemoryStorage(), spec.name, executor)
        for label, pair in UNIFORM_KV.items():
            params = runner.space.uniform_params(kv=pair, prune=0.0)
            runner.study.enqueue_trial(params, user_attrs={BASELINE_ATTR: f"uniform {label}"})
        study = runner.run()
    wall = time.perf_counter() - started
    names = spec.objective_names
    reference = study.user_attrs[REFERENCE_ATTR]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    signs = loss_signs(study.directions)
    point = reference_point(study.directions, names, reference)
    losses = np.array([t.values for t in complete], dtype=float) * signs
    uniform = [i for i, t in enumerate(complete) if str(t.user_attrs.get(BASELINE_ATTR, "")).startswith("uniform K")]
    rows = []
    for t in complete:
        config = t.user_attrs.get(CONFIG_ATTR, {})
        pairs = sorted({f"K{k}V{v}" for k, v in (config.get("kv_bits") or {}).values()})
        bits = list((config.get("bits") or {}).values())
        rows.append({"number": t.number, "label": t.user_attrs.get(BASELINE_ATTR, "sampled"),
                     **dict(zip(names, t.values)), "kv_pairs": pairs,
                     "mean_weight_bits": sum(bits) / len(bits) if bits else 32,
                     "generation_fidelity": (t.user_attrs.get(METRICS_ATTR) or {}).get("generation_fidelity"),
                     "how": {k: v.get("how") for k, v in (t.user_attrs.get(PROVENANCE_ATTR) or {}).items()}})
    hv_all = hypervolume(losses, point)
    hv_uniform = hypervolume(losses[uniform], point) if uniform else 0.0
    ppl, decode = names.index("perplexity_ratio"), names.index("decode_ms_per_token")
    good = [t for t in study.best_trials if t.values[ppl] <= 1.05]
    fastest = min(good, key=lambda t: t.values[decode]) if good else None
    summary = {
        "machine": machine(), "spec": args.spec, "task_options": spec.task_options, "trials": len(study.trials),
        "complete": len(complete), "wall_s": wall, "reference": reference,
        "hypervolume_all": hv_all, "hypervolume_uniform_kv": hv_uniform, "reference_point": point.tolist(),
        "fastest_within_1.05_ppl": None if fastest is None else {
            "number": fastest.number, **dict(zip(names, fastest.values)),
            "speedup_vs_reference": reference["decode_ms_per_token"] / fastest.values[decode]},
        "trials_table": rows,
    }
    print(json.dumps(summary, indent=1, default=str))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
