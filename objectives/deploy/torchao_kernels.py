"""Deployed Linears backed by torchao, PyTorch's low-bit inference library, where it runs.

torchao is an optional extra (``pip install 'paretoml[torchao]'``); this module is the one
place that calls it, through its public API. Each kernel here has the same format as one
of ours in :mod:`.kernels` (same weight values, same bytes) and the same call contract:
inputs of any leading shape, the input's dtype back.

=============================  ======================================  ====================
kernel                         torchao                                 same format as
=============================  ======================================  ====================
``torchao-int8-weight-only``   ``Int8Tensor`` (per-row scales, no      ``int8-weight-only``
                               activation quantization): int8 weight
                               cast into a float GEMM
``torchao-int8-dynamic``       ``Int8Tensor`` with per-token int8      ``int8-dynamic``
                               activations (``int_scaled_matmul``)
``torchao-int4-weight-only``   ``quantize_`` + ``Int4WeightOnlyConfig``  ``int4-weight-only``
                               (``tile_packed_to_4d``: tinygemm)
``torchao-fp8-rowwise``        ``quantize_`` +                         ``fp8-rowwise``
                               ``Float8DynamicActivationFloat8Weight
                               Config(PerRow())``
=============================  ======================================  ====================

The int8 tensors are made from the trial's own integers and fp16 row scales
(``Int8Tensor.from_hp(..., scale=...)``), so they hold any 2..8-bit grid exactly; with
``Int8WeightOnlyConfig`` torchao would re-derive its scales as ``max|w| / 127.5`` and move
every weight off the trial's grid. torchao's int4 re-derives asymmetric group scales and
zeros from the weight, which do not hold the trial's symmetric grid exactly (its error is
reported by :func:`probe`'s check and the benchmark); fp8 derives ``max|w| / 448`` per row,
as ours does.

Which kernel of a format runs on a device is :data:`PREFERENCE` (faster first, measured:
benchmarks/results/torchao-kernels-*.md); :func:`probe` says, once per device, whether each
runs there, and why not.

The planner (:mod:`.formats`) offers the kernels of :data:`PLANNED`: those a ``runtime``
export can store as plain tensors and rebuild without re-packing. ``torchao-int8-weight-only``
is one: :class:`TorchaoInt8WeightOnlyLinear` keeps our int8 weights and row scales as its
buffers (the same bytes, the same file) and hands them to torchao's ``Int8Tensor`` as they
are. The others stay measured only (benchmarks/torchao_kernels.py), for the reasons in
:data:`PREFERENCE`: on the H200 ours is faster for int4 (and exact), torchao's W8A8 int8
cannot be captured in a CUDA graph, and its fp8 is faster only under ``torch.compile``,
which a trial would pay for in every worker and every new shape.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from paretoml.objectives.deploy import kernels as K
from paretoml.objectives.deploy.pack import IntWeight, to_int_weight

TORCHAO_INT8_WEIGHT_ONLY = "torchao-int8-weight-only"
TORCHAO_INT8_DYNAMIC = "torchao-int8-dynamic"
TORCHAO_INT4_WEIGHT_ONLY = "torchao-int4-weight-only"
TORCHAO_FP8_ROWWISE = "torchao-fp8-rowwise"

#: each torchao kernel -> our kernel of the same format
SAME_FORMAT: dict[str, str] = {
    TORCHAO_INT8_WEIGHT_ONLY: K.Int8WeightOnlyLinear.kernel,
    TORCHAO_INT8_DYNAMIC: K.Int8DynamicLinear.kernel,
    TORCHAO_INT4_WEIGHT_ONLY: K.Int4WeightOnlyLinear.kernel,
    TORCHAO_FP8_ROWWISE: K.Fp8Linear.kernel,
}
TORCHAO_KERNELS = tuple(SAME_FORMAT)
#: the torchao kernels the planner runs trials in (a runtime export stores and restores them)
PLANNED = frozenset({TORCHAO_INT8_WEIGHT_ONLY})


def our_kernel(kernel: str) -> str:
    """Our kernel of ``kernel``'s format (``kernel`` itself for ours and the float ones)."""
    return SAME_FORMAT.get(kernel, kernel)

#: the weight grid each is built and timed with
TORCHAO_KERNEL_BITS = {TORCHAO_INT8_WEIGHT_ONLY: 8, TORCHAO_INT8_DYNAMIC: 8, TORCHAO_INT4_WEIGHT_ONLY: 4,
                       TORCHAO_FP8_ROWWISE: 8}

#: Per device type, the kernels that run one format, faster first (a kernel not named here
#: keeps its place alone). From the per-layer timings at minilm's shapes (rows 1..4096):
#: benchmarks/results/torchao-kernels-dev-2cores.md and torchao-kernels-h200.md.
PREFERENCE: dict[str, dict[str, tuple[str, ...]]] = {
    "cpu": {  # 2-core x86 (AVX2), 1 thread, rows 1..128
        # torchao's int8 cast + fp32 GEMM 162-12952 µs against _weight_int8pack_mm's 176-434511
        # (1.1-132x faster; fp32 30-12249)
        K.Int8WeightOnlyLinear.kernel: (TORCHAO_INT8_WEIGHT_ONLY, K.Int8WeightOnlyLinear.kernel),
        # ours 1.4-2.7x faster at 1 row (363-976 µs against 976-1959), within noise (0.4-1.3x) at
        # 32-128 rows; both are torch._int_mm, 10-100x slower than fp32 on this AVX2 machine
        K.Int8DynamicLinear.kernel: (K.Int8DynamicLinear.kernel, TORCHAO_INT8_DYNAMIC),
    },
    "cuda": {  # H200, CUDA-graph replay, rows 1..4096
        # torchao eager 10.6-46 µs against ours 18.5-5382 (1.7-218x faster; bf16: 3.7-11.8)
        K.Int8WeightOnlyLinear.kernel: (TORCHAO_INT8_WEIGHT_ONLY, K.Int8WeightOnlyLinear.kernel),
        # ours 31-137 µs; torchao's eager cannot be captured in a CUDA graph (1-7.6 ms eager),
        # compiled it needs more than 16 rows
        K.Int8DynamicLinear.kernel: (K.Int8DynamicLinear.kernel, TORCHAO_INT8_DYNAMIC),
        # ours (tinygemm on the trial's own grid) 4.2-222 µs, torchao's 6.6-503 (ours 1.4-2.4x
        # faster) with 1e-1 error: its re-derived asymmetric group grid, refused by the probe
        K.Int4WeightOnlyLinear.kernel: (K.Int4WeightOnlyLinear.kernel, TORCHAO_INT4_WEIGHT_ONLY),
        # torchao compiled 7.9-31 µs against ours 19.6-86 (1.8-3.2x; eager: 19-87, as ours),
        # the same torch._scaled_mm GEMM with the activation quantization fused
        K.Fp8Linear.kernel: (TORCHAO_FP8_ROWWISE, K.Fp8Linear.kernel),
    },
}


#: Per device type, the torchao kernels run under ``torch.compile``: there fp8's activation
#: quantization fuses into 1-2 kernels (H200, graph replay: 7.9-31 µs against 19-87 eager).
#: Not int8 weight-only: inductor rewrites its cast + GEMM into ``_weight_int8pack_mm``, our
#: slow op (H200: 19.6-5383 µs compiled against 10.6-46 eager; CPU: 1.6-15x slower than eager).
COMPILED: dict[str, frozenset[str]] = {"cuda": frozenset({TORCHAO_FP8_ROWWISE})}


def preferred(kernels: Iterable[str], device: torch.device) -> list[str]:
    """``kernels`` (ours) with each replaced by the kernels of its format on ``device``, in
    :data:`PREFERENCE`'s order; the caller keeps those that run (:func:`available`)."""
    order = PREFERENCE.get(device.type, {})
    return list(dict.fromkeys(k for kernel in kernels for k in order.get(kernel, (kernel,))))


def version() -> str | None:
    """torchao's version, or None where it is not installed."""
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        return dist_version("torchao")
    except PackageNotFoundError:
        return None


@functools.cache
def _torchao():
    """Import torchao once, quietly: on a CPU torch its CUDA extensions fail to load (it
    logs each, then runs without them) and its import logs a torch deprecation."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import torchao.quantization as quantization
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return quantization


class TorchaoLinear(K._DeployedLinear):
    """A Linear whose weight is a torchao tensor; ``F.linear`` dispatches into its kernel.

    Args:
        kernel: one of :data:`TORCHAO_KERNELS`.
        weight: the torchao weight (``out x in``).
        bias: in the compute dtype, or None.
        dtype: the compute dtype; inputs are cast to it.
        compiled: run the product through ``torch.compile`` (fuses the int8 cast into the GEMM).
    """

    def __init__(self, kernel: str, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype,
                 compiled: bool = False) -> None:
        super().__init__(weight.shape[1], weight.shape[0], bias)
        self.kernel = kernel
        self.dtype = dtype
        self.weight = nn.Parameter(weight, requires_grad=False)
        self._linear = _compiled_linear() if compiled else F.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self._linear(K._rows(x).to(self.dtype), self.weight), x)


class TorchaoInt8WeightOnlyLinear(K.Int8WeightOnlyLinear):
    """W8A16/W8A32 in torchao's kernel: our int8 weights and row scales (the buffers, hence
    the bytes and the export, of :class:`.kernels.Int8WeightOnlyLinear`) viewed as torchao's
    ``Int8Tensor``, whose linear casts the int8 weight into a float GEMM and scales the rows:
    on the H200 1.7-218x faster than ``torch._weight_int8pack_mm``, on the CPU 1.1-132x.

    Args:
        weight: the trial's integers and row scales.
        bias: in the compute dtype, or None.
        dtype: the compute dtype.
    """

    kernel = TORCHAO_INT8_WEIGHT_ONLY

    def __init__(self, weight: IntWeight, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__(weight, bias, dtype)
        self._int8: torch.Tensor | None = None

    def _restored(self, buffers: dict[str, torch.Tensor]) -> None:
        self._int8 = None

    def __getstate__(self) -> dict:
        """Copies and pickles hold the buffers only; the view is made again from them."""
        return {**self.__dict__, "_int8": None}

    def _torchao_weight(self) -> torch.Tensor:
        """The buffers as one ``Int8Tensor`` (no copy), made again when they have moved: kept,
        since making one costs about 24 µs on the dev CPU, a sixth of a pruned digits pass."""
        if self._int8 is None or self._int8.qdata is not self.qweight or self._int8.scale.data_ptr() != \
                self.wscale.data_ptr():
            self._int8 = _torchao().Int8Tensor(self.qweight, self.wscale[:, None],
                                               block_size=[1, self.in_features], dtype=self.wscale.dtype)
        return self._int8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = K._rows(x).to(self.wscale.dtype)
        return self._finish(F.linear(rows, self._torchao_weight()), x)


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.linear(x, weight)


@functools.cache
def _compiled_linear():
    """One compiled product for all layers (shapes past the first recompile are dynamic)."""
    return torch.compile(_linear)


def _quantized(config: object, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` after torchao's ``quantize_`` with ``config`` on a Linear holding it."""
    # uninitialised: no draw from the device's generator (after a failed CUDA-graph capture
    # elsewhere, the next draw on CUDA raises)
    holder = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=False, device=weight.device,
                                dtype=dtype)
    with torch.no_grad():
        holder.weight.copy_(weight)
    _torchao().quantize_(holder, config)
    return holder.weight.detach()


def torchao_weight(kernel: str, weight: torch.Tensor, bits: int, dtype: torch.dtype) -> torch.Tensor:
    """The torchao tensor of ``kernel`` for ``weight`` (fp32, values on a ``bits`` grid)."""
    q = _torchao()
    if kernel in (TORCHAO_INT8_WEIGHT_ONLY, TORCHAO_INT8_DYNAMIC):
        from torchao.quantization.quantize_.workflows import QuantizeTensorToInt8Kwargs

        scale = to_int_weight(weight, min(bits, 8)).scale.to(device=weight.device, dtype=torch.float32)
        act = QuantizeTensorToInt8Kwargs(granularity=q.PerRow()) if kernel == TORCHAO_INT8_DYNAMIC else None
        return q.Int8Tensor.from_hp(weight, q.PerRow(), scale=scale.clamp_min(1e-12)[:, None],
                                    act_quant_kwargs=act)
    if kernel == TORCHAO_INT4_WEIGHT_ONLY:
        layout = K.int4_layout(weight.shape[1], weight.shape[0])
        if layout is None or bits > 4:
            raise ValueError(f"int4 weight-only cannot hold a {bits}-bit {tuple(weight.shape)} weight")
        config = q.Int4WeightOnlyConfig(group_size=layout[0], int4_packing_format="tile_packed_to_4d",
                                        set_inductor_config=False)
        return _quantized(config, weight, torch.bfloat16)
    if kernel == TORCHAO_FP8_ROWWISE:
        config = q.Float8DynamicActivationFloat8WeightConfig(granularity=q.PerRow(), set_inductor_config=False)
        return _quantized(config, weight, dtype)
    raise ValueError(f"unknown torchao kernel {kernel!r}")


def build_torchao(kernel: str, weight: torch.Tensor, bias: torch.Tensor | None, bits: int,
                  device: torch.device, dtype: torch.dtype, compiled: bool | None = None) -> nn.Module:
    """A deployed Linear running torchao's ``kernel`` on ``weight`` (values on the trial's grid);
    ``compiled``: under ``torch.compile``, by default where :data:`COMPILED` says it pays."""
    compiled = kernel in COMPILED.get(device.type, ()) if compiled is None else compiled
    weight = weight.detach().to(device=device, dtype=torch.float32)
    if kernel == TORCHAO_INT8_WEIGHT_ONLY and not compiled:  # as the planner runs it
        bias = None if bias is None else bias.detach().to(device=device, dtype=dtype)
        return TorchaoInt8WeightOnlyLinear(to_int_weight(weight, min(bits, 8)), bias, dtype).to(device)
    dtype = torch.bfloat16 if kernel == TORCHAO_INT4_WEIGHT_ONLY else dtype  # tinygemm: bf16 only
    bias = None if bias is None else bias.detach().to(device=device, dtype=dtype)
    return TorchaoLinear(kernel, torchao_weight(kernel, weight, bits, dtype), bias, dtype, compiled)


#: a kernel is refused when its output is further than this from the float product
_TOLERANCE = {TORCHAO_INT8_WEIGHT_ONLY: 1e-2, TORCHAO_INT8_DYNAMIC: 5e-2, TORCHAO_INT4_WEIGHT_ONLY: 5e-2,
              TORCHAO_FP8_ROWWISE: 1e-1}


@functools.cache
def probe(kernel: str, device_key: str, dtype: torch.dtype) -> str | None:
    """None when torchao's ``kernel`` runs on the device (built, run on 32 rows, close to the
    float product and, on CUDA, captured in a CUDA graph, as deployed models run); else the
    one-line reason it does not."""
    if version() is None:
        return "torchao is not installed (pip install 'paretoml[torchao]')"
    from paretoml.objectives.compress.quantize import quantize_tensor

    device = torch.device(device_key)
    g = torch.Generator().manual_seed(0)
    weight = quantize_tensor(torch.randn(64, 128, generator=g) / 128 ** 0.5, TORCHAO_KERNEL_BITS[kernel])
    x = torch.randn(32, 128, generator=g).to(device=device, dtype=dtype)
    try:
        layer = build_torchao(kernel, weight, None, TORCHAO_KERNEL_BITS[kernel], device, dtype)
        with torch.inference_mode():
            y = layer(x).float()
            if device.type == "cuda":
                _capture(layer, x)
        ref = x.float() @ weight.to(device).t()
        err = float((y - ref).norm() / ref.norm())
    except Exception as exc:  # no such op or extension here, or not for this GPU
        return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
    if not err < _TOLERANCE[kernel]:
        return f"relative error {err:.1e} against the float product (over {_TOLERANCE[kernel]:.0e})"
    return None


def _capture(layer: nn.Module, x: torch.Tensor) -> None:
    """Capture and replay ``layer(x)`` in a CUDA graph (raises where it cannot be captured)."""
    stream = torch.cuda.Stream(device=x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(stream):
        layer(x)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            layer(x)
    except Exception as exc:
        absorb_capture_error(x.device)
        raise RuntimeError(f"cannot be captured in a CUDA graph ({exc})".replace("\n", " ")) from exc
    graph.replay()
    torch.cuda.synchronize(x.device)


def absorb_capture_error(device: torch.device) -> None:
    """After a failed capture the error can surface at the next CUDA call, which is not
    ours to fail: take it here."""
    for step in (lambda: torch.cuda.synchronize(device), lambda: torch.zeros(1, device=device).add_(1).item(),
                 lambda: torch.empty(1, device=device).uniform_().item()):  # the generator's capture state
        for _ in range(2):
            try:
                step()
                break
            except Exception:  # the capture's error, reported late
                continue


def available(device: torch.device, dtype: torch.dtype) -> frozenset[str]:
    """The torchao kernels that run on ``device`` (probed once per device and dtype)."""
    key = str(device) if device.type == "cpu" or device.index is not None else f"cuda:{torch.cuda.current_device()}"
    return frozenset(k for k in TORCHAO_KERNELS if probe(k, key, dtype) is None)
