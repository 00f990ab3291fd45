"""Build or restore a deployed layer from its kernel's name, ours or torchao's.

The planner (:mod:`.convert`) and the export's manifest name each layer's kernel; this is
the one place that knows which module runs a name: :mod:`.kernels` for ours, and
:mod:`.torchao_kernels` for those of torchao's that the planner offers
(:data:`.torchao_kernels.PLANNED`), which store plain tensors and so restore as ours do.
"""

from __future__ import annotations

import torch
from torch import nn

from paretoml.objectives.deploy import kernels as K
from paretoml.objectives.deploy import torchao_kernels as T

#: kernel name -> its layer class, for every kernel an export can hold as plain buffers
RESTORABLE: dict[str, type[K._DeployedLinear]] = {**K.KERNEL_CLASSES,
                                                  T.TORCHAO_INT8_WEIGHT_ONLY: T.TorchaoInt8WeightOnlyLinear}


def build_layer(kernel: str, weight: torch.Tensor, bias: torch.Tensor | None, bits: int,
                device: torch.device) -> nn.Module:
    """A Linear running ``kernel`` on ``weight`` (fp32, values on the trial's grid)."""
    if kernel in T.PLANNED:
        return T.build_torchao(kernel, weight, bias, bits, device, K.compute_dtype(device), compiled=False)
    return K.build_kernel(kernel, weight, bias, bits, device)


def restore_layer(kernel: str, buffers: dict[str, torch.Tensor]) -> nn.Module:
    """A deployed layer rebuilt from the buffers it was exported with: no re-quantization or
    re-packing, so it is the very layer that was timed."""
    if kernel not in RESTORABLE:
        raise ValueError(f"kernel {kernel!r} cannot be restored from an export (it has no plain buffers)")
    return RESTORABLE[kernel].from_buffers(buffers)
