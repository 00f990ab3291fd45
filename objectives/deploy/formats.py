"""Which kernel runs each layer: the layer's format (from the trial's config) and the device.

A layer's *format* is what the trial asks of it: weight bits, activation bits, sparsity
pattern. Its *own kernels* are the kernels built for exactly that format on this device. In
the default ``runtime`` deployment (:mod:`paretoml.search_space.deploy_mode`) a layer runs
only in one of its own kernels, never in a wider one for speed: choosing between "4-bit in
the int4 kernel" and "bf16" is the sampler's job, through the bits knob, and formats with no
own kernel for a layer's shape are not offered. With ``emulate: true`` such a format runs in
a *stand-in*, the narrowest kernel that holds its values exactly (a 3-bit weight in the int4
kernel, a W4A8 layer in the int8 GEMM), and the trial's latency is ``estimated``.

Own kernels, by device (availability is probed once per process, see :func:`kernels_on`):

* cpu: W8A8 -> ``int8-dynamic``; W8 -> ``torchao-int8-weight-only`` where torchao runs,
  else ``int8-weight-only``; W4 -> ``int4-weight-only``
  (tinygemm's CPU variant: rows a multiple of 16); 16 and 32 bits -> ``fp32`` (CPUs gain
  nothing from fp16 GEMMs; 16-bit weights are fp16 values run in fp32).
* cuda: W4 -> ``int4-weight-only``; W8 -> ``torchao-int8-weight-only`` where torchao runs,
  else ``int8-weight-only`` where built; W8A8 ->
  ``fp8-rowwise`` (sm89+) or ``int8-dynamic``; 2:4 with 16/32 bits -> ``sparse-2:4``;
  16 and 32 bits -> ``bf16``.

Of torchao's kernel and ours of one format, only the first that runs in
:data:`.torchao_kernels.PREFERENCE`'s order is offered (W8: torchao's, 1.1-218x faster),
so no trial pays to profile the slower. Where one format has several own kernels (W8A8
on CUDA), the device's kernel table
(:mod:`.kernel_table`, profiled once per layer shape and row count, cached on disk) picks
the fastest at the rows the layer sees in the latency pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch

from paretoml.objectives.compress.quantize import quantize_tensor
from paretoml.objectives.deploy.kernels import build_kernel, compute_dtype
from paretoml.objectives.deploy.sparse import semi_structured_mask
from paretoml.objectives.deploy.torchao_kernels import PLANNED, preferred
from paretoml.objectives.deploy.torchao_kernels import available as torchao_available

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


def _int8_weight_only(device: torch.device, available: frozenset[str]) -> list[str]:
    """The int8 weight-only kernel that runs here: the first of torchao's and ours that does."""
    return [k for k in preferred(["int8-weight-only"], device) if k in available][:1]


def own_kernels(fmt: LayerFormat, device: torch.device, available: frozenset[str]) -> list[str]:
    """The kernels built for exactly this format on this device (several only where one format
    has more than one kernel, e.g. W8A8 as fp8 or int8 on CUDA: the kernel table picks)."""
    cuda = device.type == "cuda"
    if fmt.kind != "linear":
        dense = fmt.weight_bits in FLOAT_BITS and fmt.act_bits is None and fmt.pattern == "dense"
        return [float_kernel(device)] if dense else []
    candidates: list[str] = []
    w, a = fmt.weight_bits, fmt.act_bits
    if fmt.pattern == "2:4":
        if w in FLOAT_BITS and a is None and cuda:
            candidates = ["sparse-2:4"]
    elif a == 8:
        if w == 8:
            candidates = ["fp8-rowwise", "int8-dynamic"] if cuda else ["int8-dynamic"]
    elif w in FLOAT_BITS:
        return [float_kernel(device)]
    elif w == 8:
        candidates = _int8_weight_only(device, available)
    elif w == 4:
        candidates = ["int4-weight-only"]
    return [k for k in candidates if k in available]


def own_kernel(fmt: LayerFormat, device: torch.device, available: frozenset[str]) -> str | None:
    """The first of :func:`own_kernels`, if any."""
    return next(iter(own_kernels(fmt, device, available)), None)


def stand_in_kernels(fmt: LayerFormat, device: torch.device, available: frozenset[str]) -> list[str]:
    """Kernels that hold the format's values exactly, narrowest first (``emulate: true``
    runs a format without a kernel of its own in the first of these that takes its shape)."""
    if fmt.kind != "linear":
        return [float_kernel(device)]
    w, a = fmt.weight_bits, fmt.act_bits
    if a == 8:  # only kernels that quantize activations hold an A8 format
        return [k for k in ("int8-dynamic",) if k in available and w <= 8] + ["emulated-a8"]
    candidates: list[str] = []
    if w <= 4:
        candidates.append("int4-weight-only")
    if w <= 8:
        candidates += _int8_weight_only(device, available)
    candidates.append(float_kernel(device))
    return [k for k in candidates if k in available]


@functools.cache
def _probe(device_key: str) -> frozenset[str]:
    device = torch.device(device_key)
    found = {float_kernel(device)}
    torch.manual_seed(0)
    weight = torch.randn(64, 128)
    x = torch.randn(32, 128, device=device, dtype=compute_dtype(device))
    for kernel in ("int8-dynamic", "int8-weight-only", "int4-weight-only", "fp8-rowwise", "sparse-2:4"):
        if device.type == "cpu" and kernel in ("fp8-rowwise", "sparse-2:4"):
            continue
        bits = 4 if kernel == "int4-weight-only" else 8
        try:
            w = weight
            if kernel == "sparse-2:4":
                w = weight * semi_structured_mask(weight)
            layer = build_kernel(kernel, quantize_tensor(w, bits) if kernel != "sparse-2:4" else w, None,
                                 bits, device)
            layer(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception:  # no such op, not built for this GPU, or unsupported here
            continue
        found.add(kernel)
    return frozenset(found | (PLANNED & torchao_available(device, compute_dtype(device))))


def kernels_on(device: torch.device) -> frozenset[str]:
    """The kernels that run on ``device`` in this process (probed once)."""
    key = str(device) if device.type == "cpu" or device.index is not None else f"cuda:{torch.cuda.current_device()}"
    return _probe(key)
