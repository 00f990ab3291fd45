"""Per-layer kernel times of the deployable formats against the dense float kernel.

    python benchmarks/deploy_kernels.py --device cuda --out results.md
    python benchmarks/deploy_kernels.py --device cpu --batches 1 32 128 --shapes 384x384 1536x384 384x1536

Shapes are ``out x in`` of a Linear weight. On CUDA the time is a CUDA-graph replay (the
kernel without launch overhead) and the eager time is given beside it; the baseline is bf16
(nn.Linear). On the CPU, the median wall time with the thread count of ``--threads``, fp32
baseline. Entries are cached per device (objectives/deploy/kernel_table.py).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from paretoml.objectives.deploy.formats import float_kernel, kernels_on
from paretoml.objectives.deploy.kernel_table import KernelTable, device_name

DEFAULT_SHAPES = ["384x384", "1536x384", "384x1536", "14336x4096", "4096x14336"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 256, 4096])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    table = KernelTable(device, threads=args.threads)
    base = float_kernel(device)
    kernels = [k for k in ("int8-dynamic", "int8-weight-only", "int4-weight-only", "fp8-rowwise", "sparse-2:4")
               if k in kernels_on(device)]
    lines = [f"# Deployable kernels on {device_name(device, args.threads)} (torch {torch.__version__})", "",
             f"`python benchmarks/deploy_kernels.py --device {args.device} --batches {' '.join(map(str, args.batches))}"
             f" --shapes {' '.join(args.shapes)}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             f"Kernels found: {', '.join(sorted(kernels_on(device)))}. Time in µs "
             + ("(CUDA graph replay; eager launches in brackets)" if device.type == "cuda" else
                f"(median wall time, {args.threads} thread(s))")
             + f"; `x` = speed-up over {base}; err = relative error vs the fp32 product.", ""]
    header = f"| weight (out x in) | batch | {base} µs | " + " | ".join(kernels) + " |"
    lines += [header, "|" + "---|" * (3 + len(kernels))]
    for shape in args.shapes:
        n, k = (int(v) for v in shape.split("x"))
        for batch in args.batches:
            ref = table.get(base, n, k, batch)
            cells = []
            for kernel in kernels:
                try:
                    t = table.get(kernel, n, k, batch)
                except Exception as exc:  # shape the kernel cannot take
                    cells.append(f"n/a ({type(exc).__name__})")
                    continue
                eager = f" [{t.eager_us:.1f}]" if t.eager_us is not None else ""
                cells.append(f"{t.time_us:.1f}{eager} **{ref.time_us / t.time_us:.2f}x** err {t.rel_err:.1e}")
            eager = f" [{ref.eager_us:.1f}]" if ref.eager_us is not None else ""
            lines.append(f"| {n}x{k} | {batch} | {ref.time_us:.1f}{eager} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
