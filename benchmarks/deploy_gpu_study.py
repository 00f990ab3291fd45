"""A small bits study on the GPU whose latencies are measured on the deployable model.

The model is a BERT-shaped encoder of our own (pre-LN blocks: q/k/v/o projections, scaled
dot-product attention, GELU feed-forward) with random weights, at a chosen width; the input
is a sequence of hidden states. It stands in for the ``minilm`` task of the real-models
issue, which did not exist yet when this ran. Scored by fidelity to the uncompressed model.

    python benchmarks/deploy_gpu_study.py --width 4096 --ffn 14336 --layers 4 --trials 24 --out DIR

Prints the Pareto front, the uniform baselines (16, 8, 4 bits) and the speed-up of the
fastest front point over uniform 16-bit (bf16) at the same batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import optuna
import torch
from pydantic import Field
from torch import nn

from paretoml.objectives.tasks.base import Task, TaskBundle, TaskOptions
from paretoml.objectives.tasks.registry import register_task
from paretoml.search_space.trial_attrs import BASELINE_ATTR, KERNELS_ATTR, PROVENANCE_ATTR


class Block(nn.Module):
    def __init__(self, width: int, ffn: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.query, self.key, self.value = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, ffn), nn.Linear(ffn, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        h = self.ln1(x)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2)

        a = nn.functional.scaled_dot_product_attention(split(self.query(h)), split(self.key(h)), split(self.value(h)))
        x = x + self.out(a.transpose(1, 2).reshape(b, s, d))
        return x + self.down(nn.functional.gelu(self.up(self.ln2(x))))


class Encoder(nn.Module):
    def __init__(self, width: int, ffn: int, layers: int, heads: int, classes: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[Block(width, ffn, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(x))[:, 0])


class EncoderOptions(TaskOptions):
    width: int = Field(4096, ge=64)
    ffn: int = Field(14336, ge=64)
    layers: int = Field(4, ge=1)
    heads: int = Field(32, ge=1)
    seq: int = Field(16, ge=1)
    classes: int = Field(16, ge=2)
    n_val: int = Field(256, ge=8)
    latency_batch: int = Field(1, ge=1)
    seed: int = 0


@register_task
class EncoderTask(Task):
    name = "bert-shaped"
    summary = "BERT-shaped encoder of random weights (benchmark only), scored by fidelity"
    Options = EncoderOptions

    def load(self, device: torch.device) -> TaskBundle:
        o: EncoderOptions = self.options  # type: ignore[assignment]
        torch.manual_seed(o.seed)
        model = Encoder(o.width, o.ffn, o.layers, o.heads, o.classes)
        for name, p in model.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias") and "ln" not in name and "norm" not in name:
                nn.init.zeros_(p)
        g = torch.Generator().manual_seed(o.seed + 1)
        val = torch.randn(o.n_val, o.seq, o.width, generator=g)
        return TaskBundle(model=model.to(device).eval(), example_input=val[: o.latency_batch].to(device),
                          val_inputs=val.to(device), val_labels=None)


def main(argv: list[str] | None = None) -> int:
    from paretoml.service.executors import create_executor
    from paretoml.service.report import front_table
    from paretoml.service.runner import StudyRunner
    from paretoml.service.spec import parse_spec

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--ffn", type=int, default=14336)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=16)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--latency-batch", type=int, default=1)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    spec = parse_spec({
        "name": "deploy-gpu",
        "task": "bert-shaped",
        "task_options": {"width": args.width, "ffn": args.ffn, "layers": args.layers, "seq": args.seq, "heads": args.heads,
                         "latency_batch": args.latency_batch},
        "knobs": [
            {"kind": "bitwidth", "choices": [4, 8, 16], "layers": {"kinds": ["linear"], "exclude": "head"}},
            {"kind": "activation_bits", "layers": {"kinds": ["linear"], "exclude": "head"}},
            {"kind": "prune", "method": "2:4", "layers": {"kinds": ["linear"], "include": "up|down"}},
        ],
        "objectives": [{"name": "fidelity"}, {"name": "latency_ms"}, {"name": "model_bytes"},
                       {"name": "peak_memory_bytes"}],
        "baselines": [16, 8, 4],
        "sampler": {"name": "tpe", "options": {"n_startup_trials": 8}},
        "measure": {"device": args.device, "latency_warmup": 5, "latency_repeats": 30},
        "n_trials": args.trials, "seed": 0,
    })
    url = f"sqlite:///{args.out / 'deploy_gpu_study.db'}"
    storage = optuna.storages.RDBStorage(url)
    start = time.perf_counter()
    with create_executor("inprocess", spec) as executor:
        runner = StudyRunner.create(spec, storage, "deploy-gpu", executor)
        runner.run()
    elapsed = time.perf_counter() - start
    study = runner.study
    done = [t for t in study.trials if t.values is not None]
    rows = []
    for t in done:
        prov = t.user_attrs.get(PROVENANCE_ATTR, {}).get("latency_ms", {})
        kernels = t.user_attrs.get(KERNELS_ATTR, {})
        counts: dict[str, int] = {}
        for v in kernels.values():
            counts[v["kernel"]] = counts.get(v["kernel"], 0) + 1
        rows.append({"number": t.number, "fidelity": t.values[0], "latency_ms": t.values[1],
                     "model_bytes": t.values[2], "peak_memory_bytes": t.values[3], "how": prov.get("how"),
                     "kernels": counts,
                     "baseline": t.user_attrs.get(BASELINE_ATTR)})
    base16 = next(r for r in rows if r["baseline"] == "uniform 16-bit")
    front = {t.number for t in study.best_trials}
    fastest = min((r for r in rows if r["number"] in front), key=lambda r: r["latency_ms"])
    measured_front = [r for r in rows if r["number"] in front and r["how"] == "measured"]
    fastest_measured = min(measured_front, key=lambda r: r["latency_ms"]) if measured_front else None
    lines = [f"# Bits study on {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, "
             f"torch {torch.__version__}", "",
             f"`python benchmarks/deploy_gpu_study.py --width {args.width} --ffn {args.ffn} --layers {args.layers} "
             f"--seq {args.seq} --latency-batch {args.latency_batch} --trials {args.trials}` ({elapsed:.0f} s)", "",
             "BERT-shaped encoder of our own (random weights; the minilm task was not there yet), "
             f"{args.layers} blocks, width {args.width}, ffn {args.ffn}, input {args.latency_batch} x {args.seq} tokens. "
             "Latency = median of 30 forward passes of the deployable model (CUDA graph replay where "
             "the pass can be captured; 2:4 sparse layers could not be, those trials ran eagerly). "
             "Each layer runs the fastest kernel that holds its values, by the device's kernel table; "
             "latency is `measured` when every layer ran its own format's kernel, else `estimated`.", "",
             "| trial | note | fidelity | latency ms | model MB | peak GPU MB | latency is | kernels |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["latency_ms"]):
        mark = " (front)" if r["number"] in front else ""
        lines.append(f"| {r['number']}{mark} | {r['baseline'] or ''} | {r['fidelity']:.3f} | {r['latency_ms']:.3f} | "
                     f"{r['model_bytes'] / 1e6:.1f} | {r['peak_memory_bytes'] / 1e6:.1f} | {r['how']} | "
                     + ", ".join(f"{n}x {k}" for k, n in sorted(r["kernels"].items())) + " |")
    lines += ["", f"Uniform 16-bit (bf16): {base16['latency_ms']:.3f} ms. Fastest front point: trial {fastest['number']}, "
              f"{fastest['latency_ms']:.3f} ms ({fastest['how']}): **{base16['latency_ms'] / fastest['latency_ms']:.2f}x** "
              "faster at equal batch."]
    if fastest_measured is not None:
        lines.append(f"Fastest front point with measured latency (every layer in its own format's kernel): trial "
                     f"{fastest_measured['number']}, {fastest_measured['latency_ms']:.3f} ms: "
                     f"**{base16['latency_ms'] / fastest_measured['latency_ms']:.2f}x**.")
    text = "\n".join(lines) + "\n"
    (args.out / "deploy_gpu_study.md").write_text(text)
    (args.out / "deploy_gpu_study.json").write_text(json.dumps(rows, indent=1))
    print(text)
    from rich.console import Console

    Console(width=160).print(front_table(study, spec.objective_names, "Pareto front"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
