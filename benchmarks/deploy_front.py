"""One trial, one deployment (issue 24), re-measured: a study in its deployment mode, the share
of its trials whose latency is ``measured`` (goal: 100% in runtime mode), its front against
uniform fp32 / int8 / int4, and every front point exported, reloaded and re-timed (goal:
bytes exact, latency within 10%).

    OMP_NUM_THREADS=1 python benchmarks/deploy_front.py --spec studies/digits_cnn.yaml --trials 40

Writes ``benchmarks/results/deploy-front-<task>-<machine>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from paretoml.objectives import measure
from paretoml.objectives.deploy import load_deployment
from paretoml.objectives.deploy.export import weights_file_bytes
from paretoml.search_space.space import TrialConfig
from paretoml.search_space.trial_attrs import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    DROPPED_CHOICES_ATTR,
    ERROR_ATTR,
    KERNELS_ATTR,
    PROVENANCE_ATTR,
)
from paretoml.service.executors import create_executor
from paretoml.service.export import export_completed
from paretoml.service.runner import StudyRunner, build_evaluator
from paretoml.service.spec import load_spec
from paretoml.service.storage import open_durable_storage

from _machine import machine

RESULTS = Path(__file__).parent / "results"


def _row(label: str, trial: FrozenTrial | None, names: list[str], values: dict[str, float],
         kernels: dict[str, dict]) -> dict:
    return {"label": label, "trial": None if trial is None else trial.number,
            **{n: values.get(n) for n in names},
            "kernels": {n: k["kernel"] for n, k in kernels.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="studies/digits_cnn.yaml")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--mode", default=None, help="override deploy.mode")
    parser.add_argument("--machine", default="dev-2cores")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    update: dict = {"n_trials": args.trials}
    if args.mode:
        update["deploy"] = spec.deploy.model_copy(update={"mode": args.mode})
    spec = spec.model_copy(update=update)
    names = spec.objective_names
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/front.db"
        t0 = time.perf_counter()
        with create_executor("inprocess", spec) as executor:
            runner = StudyRunner.create(spec, open_durable_storage(url), "front", executor)
            runner.run()
        study_s = time.perf_counter() - t0
        study = optuna.load_study(study_name="front", storage=url)
        trials = study.trials
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        failed = [t for t in trials if t.state == TrialState.FAIL]
        measured = [t for t in done if t.user_attrs[PROVENANCE_ATTR]["latency_ms"]["how"] == "measured"]
        evaluator = build_evaluator(spec)
        reference = evaluator.reference(names)
        rows = [_row("fp32 (uncompressed)", None, names, reference.values, reference.attrs["kernels"])]
        rows += [_row(t.user_attrs[BASELINE_ATTR], t, names, dict(zip(names, t.values)), t.user_attrs[KERNELS_ATTR])
                 for t in done if BASELINE_ATTR in t.user_attrs]
        front = sorted(study.best_trials, key=lambda t: t.values[names.index("model_bytes")])
        trips = []
        for trial in front:
            out = Path(tmp) / f"t{trial.number}"
            export_completed(spec, trial, "front", out)
            size, header = weights_file_bytes(out)
            loaded = load_deployment(out)
            example = measure.example_inputs(evaluator._latency_example(), evaluator.settings.latency.batch_size)
            again = measure.latency_ms(loaded.model, example, evaluator.settings.latency)
            values = dict(zip(names, trial.values))
            trips.append({
                **_row(f"front #{trial.number}", trial, names, values, trial.user_attrs[KERNELS_ATTR]),
                "file_bytes_less_header": size - header,
                "bytes_exact": size - header == values["model_bytes"],
                "same_kernels": {p.name: p.kernel for p in loaded.layers}
                == {n: k["kernel"] for n, k in trial.user_attrs[KERNELS_ATTR].items()},
                "retimed_ms": again, "retime_ratio": again / values["latency_ms"],
                "config_bits": TrialConfig.from_dict(trial.user_attrs[CONFIG_ATTR]).bits,
                "config_prune": TrialConfig.from_dict(trial.user_attrs[CONFIG_ATTR]).prune,
            })
    result = {
        "spec": args.spec, "deploy": spec.deploy.model_dump(), "machine": machine(), "trials": len(trials),
        "complete": len(done), "failed": len(failed), "measured": len(measured),
        "measured_share": len(measured) / max(1, len(done)), "study_s": study_s,
        "dropped_choices": study.user_attrs.get(DROPPED_CHOICES_ATTR),
        "errors": sorted({str(t.user_attrs.get(ERROR_ATTR, "")).strip().splitlines()[-1] for t in failed}),
        "baselines": rows, "front": trips,
    }
    stem = f"deploy-front-{spec.task}-{spec.deploy.mode}-{args.machine}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    (RESULTS / f"{stem}.md").write_text(report(result, names))
    print(report(result, names))


def report(result: dict, names: list[str]) -> str:
    lines = [f"# {result['spec']}: deploy {result['deploy']}", "",
             f"machine: {result['machine']}", "",
             f"{result['complete']} of {result['trials']} trials complete, {result['failed']} failed; "
             f"latency `measured` in {result['measured']} of {result['complete']} "
             f"({100 * result['measured_share']:.0f}%); study {result['study_s']:.0f} s", ""]
    if result["dropped_choices"]:
        dropped = "; ".join(f"{k} {v}" for k, v in result["dropped_choices"]["dropped"].items())
        lines += [f"choices not offered (no kernel of their own format on {result['dropped_choices']['device']}): "
                  f"{dropped}", ""]
    if result["errors"]:
        lines += ["errors: " + "; ".join(result["errors"]), ""]
    head = " | ".join(names)
    lines += ["## Baselines", "", f"| point | {head} | kernels |", "|---" * (len(names) + 2) + "|"]
    for row in result["baselines"]:
        cells = " | ".join(f"{row[n]:.4g}" if row[n] is not None else "" for n in names)
        kernels = ", ".join(f"{k}:{v}" for k, v in row["kernels"].items())
        lines.append(f"| {row['label']} | {cells} | {kernels} |")
    lines += ["", "## Front, exported and reloaded", "",
              f"| point | {head} | file less header | bytes exact | same kernels | re-timed ms | ratio | kernels | "
              "structured prune |", "|---" * (len(names) + 8) + "|"]
    for row in result["front"]:
        cells = " | ".join(f"{row[n]:.4g}" for n in names)
        kernels = ", ".join(f"{k}:{v}" for k, v in row["kernels"].items())
        pruned = ", ".join(f"{k}:{v:g}" for k, v in row["config_prune"].items() if v) or "-"
        lines.append(f"| {row['label']} | {cells} | {row['file_bytes_less_header']} | {row['bytes_exact']} | "
                     f"{row['same_kernels']} | {row['retimed_ms']:.4g} | {row['retime_ratio']:.2f} | {kernels} | "
                     f"{pruned} |")
    within = sum(abs(r["retime_ratio"] - 1) <= 0.10 for r in result["front"])
    lines += ["", f"bytes exact for {sum(r['bytes_exact'] for r in result['front'])} of {len(result['front'])} "
              f"front points; re-timed within 10% for {within} of {len(result['front'])} (2 shared cores: "
              "other sessions' load moves single-thread timings)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
