"""The measured front of a ``minilm`` study against uniform 8- and 4-bit, on held-out text.

Takes a finished study (``paretoml run studies/minilm.yaml``), re-measures its Pareto
trials and its uniform baselines on the task's test split (sentences no trial was scored
on): fidelity, neighbour recall@10, packed bytes and latency, and prints a Markdown table.

    python benchmarks/minilm_front.py --storage sqlite:///minilm.db --study minilm-demo-...
"""

from __future__ import annotations

import argparse

import optuna
import torch

from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
from paretoml.objectives.measure import LatencySettings
from paretoml.objectives.tasks.registry import create_task
from paretoml.search_space.space import TrialConfig
from paretoml.search_space.trial_attrs import BASELINE_ATTR, CONFIG_ATTR, SPEC_ATTR
from paretoml.service.spec import parse_spec
from paretoml.service.storage import open_storage

from _machine import machine

METRICS = ["fidelity", "recall_at_10", "model_bytes", "latency_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    study = optuna.load_study(study_name=args.study, storage=open_storage(args.storage))
    spec = parse_spec(study.user_attrs[SPEC_ATTR])
    options = {**spec.task_options, "n_test": 512}
    evaluator = TrialEvaluator(create_task(spec.task, options),
                               MeasureSettings(latency=LatencySettings(warmup=5, repeats=args.repeats)))
    torch.set_num_threads(1)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    baselines = [t for t in complete if str(t.user_attrs.get(BASELINE_ATTR, "")).startswith("uniform")]
    pareto = sorted(study.best_trials, key=lambda t: t.values[spec.objective_names.index("model_bytes")])
    rows = [("fp32 (uncompressed)", TrialConfig(), None)]
    rows += [(t.user_attrs[BASELINE_ATTR], TrialConfig.from_dict(t.user_attrs[CONFIG_ATTR]), t) for t in baselines]
    rows += [(f"front #{t.number}", TrialConfig.from_dict(t.user_attrs[CONFIG_ATTR]), t) for t in pareto
             if t not in baselines]
    print(f"minilm front of `{args.study}`: {len(complete)} complete trials, {len(study.best_trials)} Pareto-optimal; "
          f"re-measured on the {options['n_test']} held-out test sentences")
    print(f"machine: {machine()}; latency: batch {evaluator.data.example.batch_size} sentences, 1 thread, "
          f"median of {args.repeats} (a shared machine: others' load disturbs it)\n")
    print("| trial | fidelity (test) | recall@10 (test) | MB | latency ms | mean layer bits | share of heads / FFN neurons pruned | fidelity (val, in study) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, config, trial in rows:
        values = evaluator.evaluate(config, METRICS, split="test").values
        bits = list(config.bits.values())
        mean_bits = sum(bits) / len(bits) if bits else 32
        heads = sum(r for n, r in config.prune.items() if "query" in n) / 6
        ffn = sum(r for n, r in config.prune.items() if "intermediate" in n) / 6
        in_study = f"{trial.values[0]:.4f}" if trial is not None else "1"
        print(f"| {label} | {values['fidelity']:.4f} | {values['recall_at_10']:.3f} | "
              f"{values['model_bytes'] / 1e6:.2f} | {values['latency_ms']:.1f} | {mean_bits:.2f} | "
              f"{heads:.2f} / {ffn:.2f} | {in_study} |", flush=True)


if __name__ == "__main__":
    main()
