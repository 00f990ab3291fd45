"""Per-device table of per-layer kernel times (layer shape x kernel x batch), profiled once
and cached on disk, so a figure for a layer is measured a single time per machine.

On CUDA a layer is timed as a CUDA graph replay (launch overhead removed: what the kernel
costs inside a graphed or compiled model) and eagerly (one launch per op, as an eager
``nn.Module`` runs); on the CPU by the median wall time. Each entry also records the
kernel's relative error against the fp32 product with the same grid-valued weights, so
a wrong packing shows up next to its time.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from paretoml.objectives.compress.quantize import quantize_tensor
from paretoml.objectives.deploy.kernels import build_kernel, compute_dtype
from paretoml.objectives.deploy.sparse import semi_structured_mask
from paretoml.objectives.deploy.torchao_kernels import TORCHAO_KERNEL_BITS
from paretoml.objectives.device_lock import exclusive_timing

FLOAT_KERNELS = ("fp32", "bf16", "fp16")
#: the weight grid each kernel is timed with
KERNEL_BITS = {"int8-dynamic": 8, "int8-weight-only": 8, "int4-weight-only": 4, "fp8-rowwise": 8,
               "sparse-2:4": 16, "emulated-a8": 8, "fp32": 16, "bf16": 16, "fp16": 16, **TORCHAO_KERNEL_BITS}


@dataclass(frozen=True)
class KernelTime:
    kernel: str
    out_features: int
    in_features: int
    batch: int
    time_us: float  # CUDA: graph replay; CPU: median wall time
    eager_us: float | None  # CUDA only: eager launches, back to back
    rel_err: float


def device_name(device: torch.device, threads: int = 1) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu-{platform.machine()}-{threads}threads"


def _layer(kernel: str, weight: torch.Tensor, bias: torch.Tensor, device: torch.device) -> nn.Module:
    if kernel in FLOAT_KERNELS:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[kernel]
        layer = nn.Linear(weight.shape[1], weight.shape[0], device=device, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        return layer
    return build_kernel(kernel, weight, bias, KERNEL_BITS[kernel], device)


def _time_cuda(fn, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def per_call(run) -> float:
        for _ in range(5):
            run()
        samples = []
        for _ in range(5):
            torch.cuda.synchronize()
            start.record()
            for _ in range(repeats):
                run()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) * 1e3 / repeats)
        return statistics.median(samples)

    return per_call(graph.replay), per_call(lambda: fn(x))


def _time_cpu(fn, x: torch.Tensor, repeats: int) -> float:
    for _ in range(3):
        fn(x)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def profile_kernel(kernel: str, out_features: int, in_features: int, batch: int, device: torch.device,
                   budget_s: float = 0.25, seed: int = 0) -> KernelTime:
    """Time one layer; repeats are fitted to ``budget_s`` (slow kernels get few)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # built as deployable() builds it: outside inference mode
        weight = torch.randn(out_features, in_features, generator=g) / in_features ** 0.5
        if kernel == "sparse-2:4":
            weight = weight * semi_structured_mask(weight)
        weight = quantize_tensor(weight, KERNEL_BITS[kernel])
        bias = torch.randn(out_features, generator=g) * 0.01
        layer = _layer(kernel, weight.to(device), bias.to(device), device)
    dtype = compute_dtype(device) if kernel not in FLOAT_KERNELS else layer.weight.dtype
    x = torch.randn(batch, in_features, generator=g).to(device=device, dtype=dtype)
    with torch.inference_mode():
        ref = torch.nn.functional.linear(x.float(), weight.to(device), bias.to(device))
        err = float((layer(x).float() - ref).norm() / ref.norm().clamp_min(1e-12))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        layer(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        once = time.perf_counter() - t0
        repeats = max(3, min(50, int(budget_s / 10 / max(once, 1e-6))))
        if device.type == "cuda":
            graph_us, eager_us = _time_cuda(layer, x, repeats)
            return KernelTime(kernel, out_features, in_features, batch, graph_us, eager_us, err)
        return KernelTime(kernel, out_features, in_features, batch, _time_cpu(layer, x, repeats), None, err)


class KernelTable:
    """The cached table of one device: ``get`` profiles what is missing and saves it."""

    def __init__(self, device: torch.device, path: Path | None = None, threads: int = 1) -> None:
        """CPU kernels are timed with ``threads`` threads (1, like the default latency pass)."""
        from paretoml.objectives.tasks.cache import cache_dir

        self.device = device
        self.threads = threads
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{device_name(device, threads)}-torch{torch.__version__}").strip("-")
        self.path = path or cache_dir() / "kernel-times" / f"{slug}.json"
        self._rows: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    @staticmethod
    def key(kernel: str, out_features: int, in_features: int, batch: int) -> str:
        return f"{kernel}|{out_features}x{in_features}|{batch}"

    def get(self, kernel: str, out_features: int, in_features: int, batch: int) -> KernelTime:
        key = self.key(kernel, out_features, in_features, batch)
        if key not in self._rows:
            previous = torch.get_num_threads()
            if self.device.type == "cpu":
                torch.set_num_threads(self.threads)
            try:  # timed alone on its GPU: other workers' kernels would be counted too
                with exclusive_timing(self.device):
                    self._rows[key] = asdict(profile_kernel(kernel, out_features, in_features, batch, self.device))
            finally:
                torch.set_num_threads(previous)
            self._save()
        return KernelTime(**self._rows[key])

    def _save(self) -> None:
        """Merge into the file and replace it atomically; workers of one machine share it, so
        each writes its own temporary file. The table is a cache: a failed write loses nothing."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(self.path.with_name(self.path.name + ".lock")):  # read, merge, write as one step
                on_disk = json.loads(self.path.read_text()) if self.path.exists() else {}
                self._rows = {**on_disk, **self._rows}
                tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
                tmp.write_text(json.dumps(self._rows, indent=1, sort_keys=True))
                os.replace(tmp, self.path)
        except (OSError, ValueError):
            pass
