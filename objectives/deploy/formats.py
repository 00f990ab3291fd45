"""Which kernel runs each layer: the layer's format (from the trial's config) and the device.

A layer's *format* is what the trial asks of it: weight bits, activation bits, sparsity
pattern. Its *own kernel* is a kernel built for exactly that format on this device; when
there is none, the layer runs in a stand-in that holds its values exactly (a 3-bit weight
in the int4 kernel, a 4-bit CPU weight in fp32, a W4A8 layer in the int8 GEMM), and the
trial's latency is then ``estimated``, never ``measured``: it is the time of a real
deployment with stand-ins, and a native kernel for the format could be faster. A8 formats
only run in kernels that quantize activations (``emulated-a8``, float GEMM on int8-rounded
activations, is the last resort where no integer kernel takes the layer's shape).

Own kernels, by device (availability is probed once per process, see :func:`kernels_on`;
where torchao runs a format faster, its kernel of the same format comes first, see
:mod:`.torchao_kernels`):

* cpu: W8A8 -> ``int8-dynamic``; W8 -> ``int8-weight-only``; 16 and 32 bits -> ``fp32``
  (CPUs gain nothing from fp16 GEMMs; 16-bit weights are fp16 values run in fp32).
* cuda: W4 -> ``int4-weight-only``; W8 -> ``int8-weight-only`` where built; W8A8 ->
  ``fp8-rowwise`` (sm89+) else ``int8-dynamic``; 2:4 with 16/32 bits -> ``sparse-2:4``;
  16 and 32 bits -> ``bf16``.

Where several kernels can run a layer (its own and stand-ins holding its values), the
device's kernel table (:mod:`.kernel_table`, profiled once per layer shape and row count,
cached on disk) picks the fastest at the rows the layer sees in the latency pass. So an
8-bit weight without activation bits runs in fp32/bf16 wherever PyTorch's int8
weight-only kernel is slower (it measured 10-100x slower than fp32 on x86 and than bf16 on
the H200: benchmarks/results/deploy-kernels-*.md), and its latency is then ``estimated``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch

from paretoml.objectives.deploy.torchao_kernels import available as torchao_available, preferred

Pattern = Literal["dense", "2:4"]
FLOAT_BITS = (16, 32)


@dataclass(frozen=True)
class LayerFormat:
    """What a trial asks of one layer."""

    kind: str  # linear | conv | embedding
    weight_bits: int  # 2..8, 16, or 32 (no bits knob)
    act_bits: int | None = None  # 8, or None for float activations
    pattern: Pattern = "dense"

    @property
    def label(self) -> str:
        text = f"w{self.weight_bits}" + (f"a{self.act_bits}" if self.act_bits else "")
        return text + (" 2:4" if self.pattern == "2:4" else "")


def float_kernel(device: torch.device) -> str:
    return "bf16" if device.type == "cuda" else "fp32"


def compute_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def own_kernel(fmt: LayerFormat, device: torch.device, available: frozenset[str]) -> str | None:
    """The kernel built for exactly this format on this device, if any."""
    cuda = device.type == "cuda"
    if fmt.kind != "linear":
        dense = fmt.weight_bits in FLOAT_BITS and fmt.act_bits is None and fmt.pattern == "dense"
        return float_kernel(device) if dense else None
    candidates: list[str] = []
    w, a = fmt.weight_bits, fmt.act_bits
    if fmt.pattern == "2:4":
        if w in FLOAT_BITS and a is None and cuda:
            candidates = ["sparse-2:4"]
    elif a == 8:
        if w == 8:
            candidates = ["fp8-rowwise", "int8-dynamic"] if cuda else ["int8-dynamic"]
    elif w in FLOAT_BITS:
        return float_kernel(device)
    elif w == 8:
        candidates = ["int8-weight-only"]
    elif w == 4 and cuda:
        candidates = ["int4-weight-only"]
    return next((k for k in preferred(candidates, device) if k in available), None)


def stand_in_kernels(fmt: LayerFormat, device: torch.device, available: frozenset[str]) -> list[str]:
    """Kernels that hold the format's values exactly, in order of preference when no
    kernel times are known (the device's kernel table picks among them otherwise)."""
    if fmt.kind != "linear":
        return [float_kernel(device)]
    w, a = fmt.weight_bits, fmt.act_bits
    if a == 8:  # only kernels that quantize activations hold an A8 format
        return [k for k in preferred(("int8-dynamic",), device) if k in available] + ["emulated-a8"]
    candidates: list[str] = []
    if device.type == "cuda" and w <= 4:
        candidates.append("int4-weight-only")
    candidates.append(float_kernel(device))
    if w <= 8:
        candidates.append("int8-weight-only")
    return [k for k in preferred(candidates, device) if k in available]


@functools.cache
def _probe(device_key: str) -> frozenset[str]:
    device = torch.device(device_key)
    from paretoml.objectives.deploy.convert import build_kernel

    found = {float_kernel(device)}
    torch.manual_seed(0)
    weight = torch.randn(64, 128)
    x = torch.randn(32, 128, device=device, dtype=compute_dtype(device))
    for kernel in ("int8-dynamic", "int8-weight-only", "int4-weight-only", "fp8-rowwise", "sparse-2:4"):
        if device.type == "cpu" and kernel in ("fp8-rowwise", "sparse-2:4", "int4-weight-only"):
            continue
        bits = 4 if kernel == "int4-weight-only" else 8
        try:
            w = weight
            if kernel == "sparse-2:4":
                from paretoml.objectives.deploy.sparse import semi_structured_mask

                w = weight * semi_structured_mask(weight)
            from paretoml.objectives.compress.quantize import quantize_tensor

            layer = build_kernel(kernel, quantize_tensor(w, bits) if kernel != "sparse-2:4" else w, None,
                                 bits, device)
            layer(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception:  # no such op, not built for this GPU, or unsupported here
            continue
        found.add(kernel)
    return frozenset(found | torchao_available(device, compute_dtype(device)))


def kernels_on(device: torch.device) -> frozenset[str]:
    """The kernels that run on ``device`` in this process (probed once)."""
    key = str(device) if device.type == "cpu" or device.index is not None else f"cuda:{torch.cuda.current_device()}"
    return _probe(key)
