"""torchao's kernels against ours and the float kernel, per format, at minilm's layer shapes.

    OMP_NUM_THREADS=1 python benchmarks/torchao_kernels.py --device cpu --rows 1 32 128 \
        --out benchmarks/results/torchao-kernels-dev-2cores
    python benchmarks/torchao_kernels.py --device cuda --rows 1 16 256 4096 --compiled --out DIR/torchao-kernels-h200

Per layer (``out x in`` weight on the trial's grid, random inputs of ``rows`` rows): on CUDA
the time of a CUDA-graph replay (as deployed models run; eager launches in brackets), on
the CPU the median wall time with ``--threads``. err = relative error against the fp32
product with the same grid weights. ``--compiled`` adds torchao's kernels under
``torch.compile`` (after the eager ones, within ``--budget-s``). A kernel that fails is
shown with its error's first line. Speed goal (issue 24): torchao's kernel replaces ours
where it runs and is at least as fast; the decision is ``PREFERENCE`` in
objectives/deploy/torchao_kernels.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

from paretoml.objectives.compress.quantize import quantize_tensor
from paretoml.objectives.deploy import torchao_kernels as T
from paretoml.objectives.deploy.kernels import build_kernel, compute_dtype
from paretoml.objectives.deploy.formats import float_kernel, kernels_on

MINILM_SHAPES = ["384x384", "1536x384", "384x1536"]  # attention q/k/v/o, FFN up, FFN down
#: format -> (our kernel, torchao's kernel, weight bits)
FORMATS = {"w8": ("int8-weight-only", T.TORCHAO_INT8_WEIGHT_ONLY, 8),
           "w8a8 int8": ("int8-dynamic", T.TORCHAO_INT8_DYNAMIC, 8),
           "w4": ("int4-weight-only", T.TORCHAO_INT4_WEIGHT_ONLY, 4),
           "w8a8 fp8": ("fp8-rowwise", T.TORCHAO_FP8_ROWWISE, 8)}


def _time(fn, x: torch.Tensor, budget_s: float) -> tuple[float, float | None]:
    """(graph replay or CPU median, eager on CUDA) in µs; repeats fitted to ``budget_s``."""
    for _ in range(3):
        fn(x)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn(x)
    sync()
    repeats = max(3, min(200, int(budget_s / 10 / max(time.perf_counter() - t0, 1e-6))))
    if not x.is_cuda:
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            samples.append((time.perf_counter() - t0) * 1e6)
        return statistics.median(samples), None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def per_call(run) -> float:
        samples = []
        for _ in range(5):
            sync()
            start.record()
            for _ in range(repeats):
                run()
            end.record()
            sync()
            samples.append(start.elapsed_time(end) * 1e3 / repeats)
        return statistics.median(samples)

    eager = per_call(lambda: fn(x))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn(x)
    except Exception:  # not capturable: its eager time stands alone
        T.absorb_capture_error(x.device)
        return float("nan"), eager
    return per_call(graph.replay), eager


def _layer(kernel: str, weight: torch.Tensor, bias: torch.Tensor, bits: int, device: torch.device,
           compiled: bool) -> nn.Module:
    if kernel in ("fp32", "bf16"):
        layer = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], device=device,
                                   dtype=compute_dtype(device))
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        return layer
    if kernel in T.TORCHAO_KERNELS:
        return T.build_torchao(kernel, weight, bias, bits, device, compute_dtype(device), compiled=compiled)
    return build_kernel(kernel, weight, bias, bits, device)


def measure(kernel: str, n: int, k: int, rows: int, bits: int, device: torch.device, compiled: bool = False,
            budget_s: float = 0.2) -> dict:
    g = torch.Generator().manual_seed(0)
    weight = quantize_tensor(torch.randn(n, k, generator=g) / k ** 0.5, bits)
    bias = torch.randn(n, generator=g) * 0.01
    x = torch.randn(rows, k, generator=g).to(device=device, dtype=compute_dtype(device))
    entry = {"kernel": kernel + (" (compiled)" if compiled else ""), "shape": f"{n}x{k}", "rows": rows}
    if compiled:
        torch.compiler.reset()  # each compiled layer its own graph, none past dynamo's recompile limit
    try:
        with torch.no_grad():
            layer = _layer(kernel, weight.to(device), bias.to(device), bits, device, compiled)
        with torch.inference_mode():
            ref = torch.nn.functional.linear(x.float(), weight.to(device), bias.to(device))
            entry["rel_err"] = float((layer(x).float() - ref).norm() / ref.norm())
            entry["time_us"], entry["eager_us"] = _time(layer, x, budget_s)
    except Exception as exc:  # the kernel does not take this shape or does not run here
        entry["error"] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
    return entry


def _cell(entry: dict, base: dict) -> str:
    if "error" in base:
        return f"no float baseline ({base['error'][:70]})"
    if "error" in entry:
        return f"fails ({entry['error'][:70]})"
    if entry["time_us"] != entry["time_us"]:  # NaN: no graph
        return f"no graph [{entry['eager_us']:.1f}] err {entry['rel_err']:.1e}"
    eager = f" [{entry['eager_us']:.1f}]" if entry.get("eager_us") is not None else ""
    return f"{entry['time_us']:.1f}{eager} **{base['time_us'] / entry['time_us']:.2f}x** err {entry['rel_err']:.1e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", default=MINILM_SHAPES)
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 32, 128])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compiled", action="store_true", help="also torchao's kernels under torch.compile")
    parser.add_argument("--budget-s", type=float, default=100.0, help="stop adding compiled runs after this")
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    started = time.perf_counter()
    base_kernel = float_kernel(device)
    found = kernels_on(device)
    probes = {k: T.probe(k, str(device) if device.type == "cpu" else f"cuda:{torch.cuda.current_device()}",
                         compute_dtype(device)) for k in T.TORCHAO_KERNELS}
    entries: list[dict] = []
    table: dict[tuple, dict] = {}
    passes = [False, True] if args.compiled else [False]
    for compiled in passes:
        for fmt, (ours, theirs, bits) in FORMATS.items():
            kernels = [theirs] if compiled else [ours, theirs]
            for kernel in kernels:
                if kernel not in found and kernel not in T.TORCHAO_KERNELS:  # torchao's: timed even if refused
                    continue
                for shape in args.shapes:
                    n, k = (int(v) for v in shape.split("x"))
                    for rows in args.rows:
                        if compiled and time.perf_counter() - started > args.budget_s:
                            continue
                        if (shape, rows) not in table:
                            table[(shape, rows)] = measure(base_kernel, n, k, rows, 16, device)
                            entries.append(table[(shape, rows)])
                            print("float", table[(shape, rows)], flush=True)
                        e = measure(kernel, n, k, rows, bits, device, compiled)
                        e["format"] = fmt
                        entries.append(e)
                        print(fmt, e, flush=True)
                        _write(args, device, entries, probes, found)  # so far: a run cut short keeps it
    sys.stdout.write(_write(args, device, entries, probes, found))
    return 0


def _write(args: argparse.Namespace, device: torch.device, entries: list[dict], probes: dict, found) -> str:
    text = report(args, device, entries, probes, found)
    if args.out:
        with open(args.out + ".md", "w") as handle:
            handle.write(text)
        with open(args.out + ".json", "w") as handle:
            json.dump({"device": _device_name(device), "torch": torch.__version__, "torchao": T.version(),
                       "threads": args.threads, "probes": probes, "entries": entries}, handle, indent=1)
    return text


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu-{platform.machine()}"


def report(args: argparse.Namespace, device: torch.device, entries: list[dict], probes: dict, found) -> str:
    base_kernel = float_kernel(device)
    how = "CUDA graph replay, eager launches in brackets" if device.type == "cuda" else \
        f"median wall time, {args.threads} thread(s)"
    lines = [f"# torchao {T.version()} vs our kernels on {_device_name(device)} (torch {torch.__version__})", "",
             f"`python benchmarks/torchao_kernels.py --device {args.device} --rows {' '.join(map(str, args.rows))}"
             f" --shapes {' '.join(args.shapes)}{' --compiled' if args.compiled else ''}`, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             f"Time in µs ({how}); `x` = speed-up over {base_kernel} (above 1: faster); err = relative error "
             "against the fp32 product with the same grid weights.", "",
             "torchao probe (objectives/deploy/torchao_kernels.py): "
             + "; ".join(f"`{k}` {'runs' if r is None else 'refused: ' + r}" for k, r in probes.items()), "",
             f"Kernels found: {', '.join(sorted(found))}.", ""]
    bases = {(e["shape"], e["rows"]): e for e in entries if e["kernel"] == base_kernel}
    for fmt in FORMATS:
        rows_of = [e for e in entries if e.get("format") == fmt]
        if not rows_of:
            continue
        kernels = list(dict.fromkeys(e["kernel"] for e in rows_of))
        lines += [f"## {fmt}", "", f"| weight | rows | {base_kernel} | " + " | ".join(kernels) + " |",
                  "|" + "---|" * (3 + len(kernels))]
        for (shape, rows), base in bases.items():
            cells = [_cell(next(e for e in rows_of if e["kernel"] == kern and e["shape"] == shape and e["rows"] == rows),
                           base) if any(e["kernel"] == kern and e["shape"] == shape and e["rows"] == rows
                                        for e in rows_of) else "not run" for kern in kernels]
            eager = f" [{base['eager_us']:.1f}]" if base.get("eager_us") is not None else ""
            ref = f"{base['time_us']:.1f}{eager}" if "error" not in base else "fails"
            lines.append(f"| {shape} | {rows} | {ref} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
