"""Deployable Linear layers: each runs one real low-bit or sparse kernel of core PyTorch.

Every layer is built from a float weight whose values already lie on the trial's grid
(see :mod:`.pack`), so a kernel that can hold the grid computes the trial's very weights.
All take inputs of any leading shape and return the input's dtype.

=====================  ==========================================  ==================
kernel                 op                                          devices
=====================  ==========================================  ==================
``int8-dynamic``       ``torch._int_mm``: int8 weights (row        cpu, cuda
                       scales) x int8 activations (per-token
                       scales computed at run time), int32 sums
``int8-weight-only``   ``torch._weight_int8pack_mm``               cpu (cuda if built)
``int4-weight-only``   ``torch._weight_int4pack_mm`` (tinygemm,    cuda (cpu variant
                       bf16, group-wise scales and zeros)          for tests)
``fp8-rowwise``        ``torch._scaled_mm``, e4m3 weights and      cuda, sm89+
                       activations, per-row / per-token scales
``sparse-2:4``         ``to_sparse_semi_structured`` (cuSPARSELt   cuda, sm80+
                       / CUTLASS), fp16 or bf16
``emulated-a8``        float GEMM on int8-rounded activations      any (last resort)
=====================  ==========================================  ==================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from paretoml.objectives.deploy.pack import IntWeight, to_int_weight

FP8_MAX = 448.0  # largest finite float8_e4m3fn


def compute_dtype(device: torch.device) -> torch.dtype:
    """The float type the device's deployed models run in (CPUs gain nothing from bf16 GEMMs)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def _pad_rows(x: torch.Tensor, multiple: int, minimum: int = 0) -> torch.Tensor:
    m = x.shape[0]
    target = max(minimum, -(-m // multiple) * multiple)
    return x if target == m else F.pad(x, (0, 0, 0, target - m))


class _DeployedLinear(nn.Module):
    kernel: str = ""

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def _finish(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"

    @classmethod
    def from_buffers(cls, buffers: dict[str, torch.Tensor]) -> _DeployedLinear:
        """The layer again from its own buffers (an export of the deployed model): no
        re-quantization or re-packing, so it is the very layer that was timed."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        out_features, in_features = cls._features(buffers)
        layer.in_features, layer.out_features = in_features, out_features
        layer.register_buffer("bias", buffers.get("bias"))
        for name, tensor in buffers.items():
            if name != "bias":
                layer.register_buffer(name, tensor)
        layer._restored(buffers)
        return layer

    @classmethod
    def _features(cls, buffers: dict[str, torch.Tensor]) -> tuple[int, int]:
        return tuple(buffers["qweight"].shape)  # type: ignore[return-value]

    def _restored(self, buffers: dict[str, torch.Tensor]) -> None:
        """Attributes besides the buffers (none but for int4's group size)."""


class Int8DynamicLinear(_DeployedLinear):
    """W8A8: activations quantized per token at run time, integer GEMM, rescaled in fp32."""

    kernel = "int8-dynamic"

    def __init__(self, weight: IntWeight, bias: torch.Tensor | None) -> None:
        super().__init__(weight.q.shape[1], weight.q.shape[0], bias)
        self.register_buffer("qweight", weight.q.contiguous())
        self.register_buffer("wscale", weight.scale.to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _rows(x)
        m = rows.shape[0]
        if rows.is_cuda:  # cuBLASLt int8 GEMM: more than 16 rows, a multiple of 8
            rows = _pad_rows(rows, 8, minimum=32)
        xf = rows.to(torch.float32)
        xscale = xf.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        xq = torch.round(xf / xscale).clamp_(-127, 127).to(torch.int8)
        acc = torch._int_mm(xq, self.qweight.t())
        y = acc.to(torch.float32) * xscale * self.wscale
        return self._finish(y[:m], x)


class Int8WeightOnlyLinear(_DeployedLinear):
    """W8A16/W8A32: int8 weights with row scales, dequantized inside the GEMM."""

    kernel = "int8-weight-only"

    def __init__(self, weight: IntWeight, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__(weight.q.shape[1], weight.q.shape[0], bias)
        self.register_buffer("qweight", weight.q.contiguous())
        self.register_buffer("wscale", weight.scale.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _rows(x).to(self.wscale.dtype)
        return self._finish(torch._weight_int8pack_mm(rows, self.qweight, self.wscale), x)


def int4_layout(in_features: int, out_features: int) -> tuple[int, int] | None:
    """(group size, inner k tiles) of tinygemm for this shape, or None when it cannot hold it."""
    if out_features % 8:
        return None
    for tiles in (8, 4, 2):
        if in_features % (16 * tiles) == 0:
            group = next(g for g in (128, 64, 32) if in_features % g == 0)
            return group, tiles
    return None


class Int4WeightOnlyLinear(_DeployedLinear):
    """W4A16 with tinygemm's group-wise (scale, zero) layout; each group of a row carries the
    row's scale and a zero of 0, i.e. the trial's symmetric per-row grid (2..4 bits fit)."""

    kernel = "int4-weight-only"

    def __init__(self, weight: IntWeight, bias: torch.Tensor | None, device: torch.device) -> None:
        n, k = weight.q.shape
        layout = int4_layout(k, n)
        if layout is None or weight.bits > 4:
            raise ValueError(f"int4 weight-only cannot hold a {weight.bits}-bit {n}x{k} weight")
        super().__init__(k, n, bias)
        self.group, tiles = layout
        unsigned = (weight.q.to(torch.int32) + 8).to(device)
        if device.type == "cuda":
            nibbles = (unsigned[:, ::2] << 4 | unsigned[:, 1::2]).to(torch.uint8)
            packed = torch._convert_weight_to_int4pack(nibbles, tiles)
        else:
            packed = torch._convert_weight_to_int4pack_for_cpu(unsigned, tiles)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        scales_zeros = torch.zeros(k // self.group, n, 2, dtype=dtype, device=device)
        scales_zeros[..., 0] = weight.scale.to(device=device, dtype=dtype)
        self.register_buffer("qweight", packed)
        self.register_buffer("scales_zeros", scales_zeros)

    @classmethod
    def _features(cls, buffers: dict[str, torch.Tensor]) -> tuple[int, int]:
        groups, n, _ = buffers["scales_zeros"].shape
        packed = buffers["qweight"]
        k = packed.numel() * (8 if packed.dtype == torch.int32 else 2) // n  # 4 bits a value
        return n, k

    def _restored(self, buffers: dict[str, torch.Tensor]) -> None:
        self.group = self.in_features // buffers["scales_zeros"].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _rows(x).to(self.scales_zeros.dtype).contiguous()  # tinygemm reads rows densely
        if rows.is_cuda:
            y = torch._weight_int4pack_mm(rows, self.qweight, self.group, self.scales_zeros)
        else:
            y = torch._weight_int4pack_mm_for_cpu(rows, self.qweight, self.group, self.scales_zeros)
        return self._finish(y, x)


class Fp8Linear(_DeployedLinear):
    """W8A8 in float8 e4m3: per-row weight and per-token activation scales, bf16 output."""

    kernel = "fp8-rowwise"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        n, k = weight.shape
        if n % 16 or k % 16:
            raise ValueError(f"fp8 GEMM needs both dims a multiple of 16, got {n}x{k}")
        super().__init__(k, n, bias)
        w = weight.detach().to(torch.float32)
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / FP8_MAX
        self.register_buffer("qweight", (w / scale[:, None]).to(torch.float8_e4m3fn))
        self.register_buffer("wscale", scale[None, :].contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _rows(x)
        m = rows.shape[0]
        rows = _pad_rows(rows, 16)
        xf = rows.to(torch.float32)
        xscale = xf.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / FP8_MAX
        xq = (xf / xscale).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(xq, self.qweight.t(), scale_a=xscale, scale_b=self.wscale, out_dtype=torch.bfloat16)
        return self._finish(y[:m], x)


class SemiSparseLinear(_DeployedLinear):
    """A 2:4-sparse half-precision weight in the compressed layout of sparse tensor cores."""

    kernel = "sparse-2:4"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        from torch.sparse import to_sparse_semi_structured

        n, k = weight.shape
        super().__init__(k, n, bias)
        self.weight = nn.Parameter(to_sparse_semi_structured(weight.detach().to(dtype)), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _rows(x).to(self.weight.dtype)
        return self._finish(F.linear(rows, self.weight), x)


class EmulatedA8Linear(_DeployedLinear):
    """Last resort for an A8 layer no integer kernel can take (GPU alignment): activations
    rounded per token to int8 in floating point, then a float GEMM. Same values as W8A8,
    float speed: a trial with such a layer has an ``estimated`` latency."""

    kernel = "emulated-a8"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        n, k = weight.shape
        super().__init__(k, n, bias)
        self.register_buffer("weight", weight.detach().to(dtype))

    @classmethod
    def _features(cls, buffers: dict[str, torch.Tensor]) -> tuple[int, int]:
        return tuple(buffers["weight"].shape)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = _rows(x).to(torch.float32)
        scale = xf.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        xq = torch.round(xf / scale).clamp_(-127, 127) * scale
        return self._finish(F.linear(xq.to(self.weight.dtype), self.weight), x)


def build_kernel(kernel: str, weight: torch.Tensor, bias: torch.Tensor | None, bits: int,
                 device: torch.device) -> nn.Module:
    """A Linear running ``kernel`` on ``weight`` (fp32, values on the trial's grid)."""
    weight = weight.detach().to(device=device, dtype=torch.float32)
    bias = None if bias is None else bias.detach().to(device=device, dtype=compute_dtype(device))
    if kernel in ("int8-dynamic", "int8-weight-only", "int4-weight-only"):
        iw = to_int_weight(weight, min(bits, 8))
        if kernel == "int8-dynamic":
            return Int8DynamicLinear(iw, bias).to(device)
        if kernel == "int8-weight-only":
            return Int8WeightOnlyLinear(iw, bias, compute_dtype(device)).to(device)
        return Int4WeightOnlyLinear(iw, bias, device)
    if kernel == "fp8-rowwise":
        return Fp8Linear(weight, bias).to(device)
    if kernel == "sparse-2:4":
        return SemiSparseLinear(weight, bias, compute_dtype(device)).to(device)
    if kernel == "emulated-a8":
        return EmulatedA8Linear(weight, bias, compute_dtype(device)).to(device)
    raise ValueError(f"unknown kernel {kernel!r}")


#: kernel name -> its layer class (the float kernels are the model's own modules)
KERNEL_CLASSES: dict[str, type[_DeployedLinear]] = {
    cls.kernel: cls for cls in (Int8DynamicLinear, Int8WeightOnlyLinear, Int4WeightOnlyLinear, Fp8Linear,
                                EmulatedA8Linear)
}


def tiles(kernel: str, device: torch.device) -> tuple[int, int]:
    """(output rows, input features) multiples the kernel needs of a weight: structured
    pruning keeps row counts on these, so a pruned layer still fits its kernel."""
    if kernel == "int4-weight-only":
        return (8 if device.type == "cuda" else 16), 32
    if kernel == "fp8-rowwise":
        return 16, 16
    if kernel == "int8-dynamic" and device.type == "cuda":
        return 8, 8
    if kernel == "sparse-2:4":
        return 32, 64
    return 1, 1


def shape_fits(kernel: str, shape: tuple[int, ...], device: torch.device) -> bool:
    """The kernel can take a weight of this shape on this device."""
    n, k = shape[0], shape[1]
    if kernel == "int4-weight-only":
        return int4_layout(k, n) is not None and n % tiles(kernel, device)[0] == 0
    rows, cols = tiles(kernel, device)
    return n % rows == 0 and k % cols == 0
