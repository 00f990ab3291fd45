"""The deployable form of a compressed model: each knob-bearing layer swapped for the
kernel its format and the device call for (:mod:`.formats`), the rest in the device's
float type (fp32 on CPU, bf16 on CUDA)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from paretoml.objectives.deploy import kernels as K
from paretoml.objectives.deploy.deployed_model import DeployedModel
from paretoml.objectives.deploy.formats import LayerFormat, kernels_on, own_kernel, stand_in_kernels
from paretoml.objectives.deploy.kernel_table import KernelTable
from paretoml.objectives.deploy.kernels import build_kernel, compute_dtype
from paretoml.objectives.tasks.base import ExampleInputs
from paretoml.search_space.introspect import RECURRENT, layer_weight
from paretoml.search_space.space import TrialConfig

#: Kernels that are the module as it is, in the device's float type (nothing to build).
_AS_IS = ("fp32", "bf16")



@functools.cache
def _table(device_key: str) -> KernelTable:
    return KernelTable(torch.device(device_key))


def kernel_table(device: torch.device) -> KernelTable:
    """This process's view of the device's kernel table (one per device, built once)."""
    return _table(str(device))


@dataclass(frozen=True)
class LayerPlan:
    name: str
    shape: tuple[int, ...]
    format: LayerFormat
    own_kernel: str | None  # the format's own kernel on this device, None if it has none
    kernel: str  # what ran

    @property
    def native(self) -> bool:
        """The layer runs its format's own kernel: its time is that format's, measured."""
        return self.own_kernel is not None and self.kernel == self.own_kernel


@dataclass
class Deployment:
    model: nn.Module
    device: torch.device
    layers: list[LayerPlan] = field(default_factory=list)

    @property
    def all_native(self) -> bool:
        return all(layer.native for layer in self.layers)

    def kernel_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.kernel] = counts.get(layer.kernel, 0) + 1
        return dict(sorted(counts.items()))

    def describe(self) -> str:
        """One line for the latency objective's provenance: which kernels ran, which not."""
        ran = ", ".join(f"{n}x {k}" for k, n in self.kernel_counts().items()) or "no knob layers"
        text = f"deployable model on {self.device.type}: {ran}"
        if self.device.type == "cuda":
            text += " (bf16 elsewhere; timed as a CUDA graph replay when the forward pass can be captured)"
        stand_ins = [layer for layer in self.layers if not layer.native]
        if stand_ins:
            shown = "; ".join(f"{l.name} ({l.format.label} {l.format.kind}) in {l.kernel}" for l in stand_ins[:6])
            more = f" and {len(stand_ins) - 6} more" if len(stand_ins) > 6 else ""
            text += f"; no kernel of their own format here, ran in a kernel holding their values: {shown}{more}"
        return text


def layer_format(name: str, kind: str, config: TrialConfig) -> LayerFormat:
    return LayerFormat(
        kind=kind,
        weight_bits=config.bits.get(name, 32),
        act_bits=getattr(config, "act_bits", {}).get(name),
        pattern="2:4" if config.prune_method.get(name) == "2:4" and config.prune.get(name, 0.0) > 0 else "dense",
    )


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return "conv"


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _shape_fits(kernel: str, shape: tuple[int, ...], device: torch.device) -> bool:
    """Alignment the GPU kernels need (the CPU ones take any shape)."""
    n, k = shape[0], shape[1]
    if kernel == "int4-weight-only":
        return K.int4_layout(k, n) is not None
    if kernel == "fp8-rowwise":
        return n % 16 == 0 and k % 16 == 0
    if kernel == "int8-dynamic" and device.type == "cuda":
        return n % 8 == 0 and k % 8 == 0
    if kernel == "sparse-2:4":
        return n % 32 == 0 and k % 64 == 0
    return True


def plan_layers(model: nn.Module, config: TrialConfig, device: torch.device,
                available: frozenset[str] | None = None, rows: Mapping[str, int] | None = None,
                table: KernelTable | None = None) -> list[LayerPlan]:
    """The kernel of every layer the config touches, without building anything.

    Among the kernels that can run a layer (its format's own, and stand-ins holding its
    values), the fastest by ``table`` at the layer's ``rows`` (input rows of the latency
    pass); without them, the own kernel, else the first stand-in.
    """
    available = kernels_on(device) if available is None else available
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}

    def position(name: str) -> tuple[int, str]:  # a recurrent matrix sits at its module
        return (order[name], "") if name in order else (order.get(name.rpartition(".")[0], len(order)), name)

    names = sorted(set(config.bits) | set(getattr(config, "act_bits", {}))
                   | {n for n, m in config.prune_method.items() if m == "2:4"}, key=position)
    plans: list[LayerPlan] = []
    for name in names:
        module = modules.get(name)  # None: a recurrent layer's weight matrix, named by its parameter
        fmt = layer_format(name, _kind(module) if module is not None else RECURRENT, config)
        shape = tuple(layer_weight(model, name).shape)
        own = own_kernel(fmt, device, available)
        candidates = list(dict.fromkeys(([own] if own else []) + stand_in_kernels(fmt, device, available)))
        candidates = [k for k in candidates if _shape_fits(k, shape, device)]
        if len(candidates) > 1:  # emulation is the last resort, never a choice for speed
            candidates = [k for k in candidates if k != "emulated-a8"]
        kernel = candidates[0]
        if table is not None and rows is not None and name in rows and len(candidates) > 1:
            kernel = min(candidates, key=lambda k: table.get(k, shape[0], shape[1], rows[name]).time_us)
        plans.append(LayerPlan(name, shape, fmt, own, kernel))
    return plans


@torch.no_grad()
def layer_rows(model: nn.Module, names: list[str], example: torch.Tensor | ExampleInputs) -> dict[str, int]:
    """Input rows (tokens x batch) each named layer sees in one forward pass of ``example``."""
    rows: dict[str, int] = {}
    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_pre_hook(
        lambda _m, args, name=name: rows.__setitem__(name, args[0].numel() // args[0].shape[-1]))
        for name in names]
    try:
        ExampleInputs.of(example)(model.eval())
    finally:
        for hook in hooks:
            hook.remove()
    return rows


@torch.no_grad()
def deployable(model: nn.Module, config: TrialConfig, device: torch.device | str,
               inplace: bool = False, available: frozenset[str] | None = None,
               example: torch.Tensor | ExampleInputs | None = None) -> Deployment:
    """The model as it would be deployed: real kernels per layer, the device's dtype.

    ``model`` holds the trial's compressed weights (fake-quantized values, pruned zeros).
    With ``example`` (the latency pass's input), each layer runs the fastest kernel that
    holds its values, by the device's cached kernel table.
    """
    device = torch.device(device)
    model = model if inplace else copy.deepcopy(model)
    rows = table = None
    if example is not None:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        rows = layer_rows(model, linear, ExampleInputs.of(example).to(device))
        table = kernel_table(device)
    plans = plan_layers(model, config, device, available, rows, table)
    modules = dict(model.named_modules())
    weights = {p.name: (modules[p.name].weight.detach().float().clone(),  # type: ignore[union-attr]
                        getattr(modules[p.name], "bias", None)) for p in plans if p.kernel not in _AS_IS}
    dtype = compute_dtype(device)
    model.to(device=device, dtype=dtype)
    for plan in plans:
        if plan.kernel in _AS_IS:
            continue  # the module as it is, in the device's float type (recurrent layers: always)
        weight, bias = weights[plan.name]
        bias = None if bias is None else bias.detach().float()
        _set_module(model, plan.name, build_kernel(plan.kernel, weight, bias, plan.format.weight_bits, device))
    wrapped = DeployedModel(model.eval(), dtype, graphs=device.type == "cuda") if device.type == "cuda" \
        else model.eval()
    return Deployment(wrapped, device, plans)


def kernel_summary(plans: list[LayerPlan]) -> dict[str, Mapping[str, object]]:
    """Per layer: its format, own kernel and the kernel that ran (stored with the trial)."""
    return {p.name: {"format": p.format.label, "own_kernel": p.own_kernel, "kernel": p.kernel} for p in plans}
