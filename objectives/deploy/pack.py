"""Integer weights and their scales, recovered from a fake-quantized weight, and b-bit packing.

:mod:`paretoml.objectives.compress.quantize` leaves each quantized weight as ``q * scale``
in floating point, with ``q`` an integer in ``[-L, L]`` (``L = 2^(b-1) - 1``) and one fp16
scale per output row. The row's largest ``|q|`` is always ``L``, so ``scale`` is
``max|w_row| / L`` exactly (an fp16 times an integer below 2^7 is exact in fp32), and
``q = round(w / scale)`` is exact too: the deployable layers and the exported file hold the
very values the trial measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class IntWeight:
    """``weight == q * scale[:, None]`` (rows flattened), ``q`` int8 in ``[-L, L]``."""

    q: torch.Tensor  # int8, shape (rows, cols)
    scale: torch.Tensor  # float16, shape (rows,)
    bits: int

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.q.to(torch.float32) * self.scale.to(torch.float32)[:, None]).to(dtype)


def levels(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def to_int_weight(weight: torch.Tensor, bits: int) -> IntWeight:
    """Split a fake-quantized ``weight`` (2..8 bits) into its integers and fp16 row scales."""
    if not 2 <= bits <= 8:
        raise ValueError(f"integer weights have 2..8 bits, got {bits}")
    rows = weight.detach().reshape(weight.shape[0], -1).to(torch.float32)
    top = levels(bits)
    scale = (rows.abs().amax(dim=1) / top).to(torch.float16)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale).to(torch.float32)
    q = torch.round(rows / safe[:, None]).clamp_(-top, top).to(torch.int8)
    return IntWeight(q, scale, bits)


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack signed integers of ``bits`` (offset to unsigned) into a uint8 bit stream."""
    u = (values.flatten().to(torch.int16) + 2 ** (bits - 1)).cpu().numpy().astype(np.uint8)
    planes = (u[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_bits(stream: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``count`` signed int8 values."""
    flat = np.unpackbits(stream.cpu().numpy(), bitorder="little")[: count * bits]
    planes = flat.reshape(count, bits).astype(np.int16) << np.arange(bits, dtype=np.int16)
    return torch.from_numpy((planes.sum(axis=1) - 2 ** (bits - 1)).astype(np.int8))


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.flatten().cpu().numpy().astype(np.uint8), bitorder="little"))


def unpack_mask(stream: torch.Tensor, count: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(stream.cpu().numpy(), bitorder="little")[:count].astype(bool))
