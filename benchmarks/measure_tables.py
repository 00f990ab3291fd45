"""Measure, once, the two table problems of the search-efficiency benchmark on the digits CNN.

  quantune-48   every knob categorical, as in Quantune's search: weight-only post-training
                quantization of every layer of the trained digits CNN with a bit-width
                (int2/int3), a granularity (per tensor / per output channel), a scheme
                (symmetric / asymmetric, with zero point) and a clipping of the range
                (none / 99.9th / 99.5th / 99th / 98th / 95th percentile of the weights):
                2 x 2 x 2 x 6 = 48
                configurations, one objective (validation accuracy).
  bits-table    per-layer bits {2,3,4,6,8} (categorical) and per-layer unstructured pruning
                in tenths 0..8 (integer) over the sensitivity table of the same model
                (accuracy drop of each layer alone at each setting, and each layer's packed
                bytes at every (bits, ratio) measured on the real tensor); a configuration's
                accuracy is the base accuracy less the summed drops (the additive model of
                surrogates/sensitivity.py), its size the summed bytes.

The tables are committed (benchmarks/data/*.json), so the benchmark reads them in
microseconds per trial and reruns give the same numbers:
  python benchmarks/measure_tables.py [--out benchmarks/data]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os

import torch

BITS = ["int2", "int3"]
GRANULARITY = ["tensor", "channel"]
SCHEME = ["symmetric", "asymmetric"]
CLIPPING = ["none", "p99.9", "p99.5", "p99", "p98", "p95"]
QUANTUNE_KNOBS = {"bits": BITS, "granularity": GRANULARITY, "scheme": SCHEME, "clipping": CLIPPING}
TABLE_BITS = [2, 3, 4, 6, 8]
TABLE_PRUNE_TENTHS = list(range(9))


@torch.no_grad()
def fake_quantize(weight: torch.Tensor, bits: int, granularity: str, scheme: str, clipping: str) -> torch.Tensor:
    """Quantize and de-quantize ``weight`` with the given Quantune-style settings."""
    rows = weight.reshape(weight.shape[0], -1) if granularity == "channel" else weight.reshape(1, -1)
    q = 1.0 if clipping == "none" else float(clipping[1:]) / 100
    if scheme == "symmetric":
        top = torch.quantile(rows.abs(), q, dim=1, keepdim=True) if q < 1 else rows.abs().amax(dim=1, keepdim=True)
        levels = 2 ** (bits - 1) - 1
        scale = torch.where(top > 0, top / levels, torch.ones_like(top))
        out = torch.clamp(torch.round(rows / scale), -levels, levels) * scale
    else:
        lo = torch.quantile(rows, 1 - q, dim=1, keepdim=True) if q < 1 else rows.amin(dim=1, keepdim=True)
        hi = torch.quantile(rows, q, dim=1, keepdim=True) if q < 1 else rows.amax(dim=1, keepdim=True)
        levels = 2**bits - 1
        scale = torch.where(hi > lo, (hi - lo) / levels, torch.ones_like(hi))
        zero = torch.round(-lo / scale)
        out = (torch.clamp(torch.round(rows / scale) + zero, 0, levels) - zero) * scale
    return out.reshape(weight.shape)


def quantune_table(evaluator) -> dict:
    from paretoml.objectives.measure import accuracy

    bundle = evaluator.bundle
    names = [layer.name for layer in evaluator.layers]
    rows = []
    for config in itertools.product(*QUANTUNE_KNOBS.values()):
        settings = dict(zip(QUANTUNE_KNOBS, config))
        model = copy.deepcopy(bundle.model)
        modules = dict(model.named_modules())
        for name in names:
            w = modules[name].weight
            w.data.copy_(fake_quantize(w.data, int(settings["bits"][3:]), settings["granularity"],
                                       settings["scheme"], settings["clipping"]))
        rows.append({**settings, "accuracy": accuracy(model.eval(), bundle.val_inputs, bundle.val_labels)})
    base = accuracy(bundle.model, bundle.val_inputs, bundle.val_labels)
    return {"model": "digits-cnn", "fp32_accuracy": base, "knobs": QUANTUNE_KNOBS, "rows": rows}


def bits_table(evaluator) -> dict:
    from paretoml.surrogates.sensitivity import measure_sensitivity

    layers = [layer.name for layer in evaluator.layers]
    ratios = [t / 10 for t in TABLE_PRUNE_TENTHS]
    sens = measure_sensitivity(evaluator, layers, TABLE_BITS, ratios)
    base = evaluator.reference(["accuracy", "model_bytes"]).values
    return {
        "model": "digits-cnn", "fp32_accuracy": base["accuracy"], "fp32_bytes": base["model_bytes"],
        "other_bytes": 4 * evaluator.other_params, "bits": TABLE_BITS, "prune_tenths": TABLE_PRUNE_TENTHS,
        "layers": {
            s.layer: {
                "bits_drop": {str(b): s.drop[b] for b in TABLE_BITS},
                "prune_drop": {str(t): (s.prune_drop.get(t / 10, 0.0) if t else 0.0) for t in TABLE_PRUNE_TENTHS},
                "bytes": {f"{b},{t}": s.weight_bytes[(b, t / 10)] for b in TABLE_BITS for t in TABLE_PRUNE_TENTHS},
            }
            for s in sens
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    parser.add_argument("--only", choices=["quantune-48", "bits-table"])
    args = parser.parse_args()
    from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
    from paretoml.objectives.tasks.registry import create_task

    torch.manual_seed(0)
    evaluator = TrialEvaluator(create_task("digits-cnn"), MeasureSettings())
    os.makedirs(args.out, exist_ok=True)
    for name, measure in (("quantune-48", quantune_table), ("bits-table", bits_table)):
        if args.only and name != args.only:
            continue
        table = measure(evaluator)
        path = os.path.join(args.out, f"{name}.json")
        with open(path, "w") as handle:
            json.dump(table, handle, indent=1, sort_keys=True)
        print("wrote", path)


if __name__ == "__main__":
    main()
