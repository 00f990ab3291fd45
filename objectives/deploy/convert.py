"""The deployable form of a compressed model: each knob-bearing layer swapped for the
kernel its format and the device call for (:mod:`.formats`), the rest in the device's
float type (fp32 on CPU, bf16 on CUDA).

One trial, one deployment: the plan follows the study's :class:`DeployMode`. In ``runtime``
mode a layer runs only in a kernel of its own format (the kernel table may choose among
several of that format); with ``emulate`` a format without one runs in the narrowest
kernel holding its values; in ``dequantize-at-load`` mode every layer runs expanded, in
the device's float type. What runs is what the trial's bytes, latency and memory count."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from paretoml.objectives.deploy.deployed_model import DeployedModel
from paretoml.objectives.deploy.formats import LayerFormat, float_kernel, kernels_on, own_kernels, stand_in_kernels
from paretoml.objectives.deploy.kernel_table import KernelTable
from paretoml.objectives.deploy.kernels import compute_dtype, shape_fits, tiles
from paretoml.objectives.deploy.layer_kernels import build_layer
from paretoml.objectives.tasks.base import ExampleInputs
from paretoml.search_space.deploy_mode import DEFAULT_DEPLOY, DEQUANTIZE_AT_LOAD, DeployMode
from paretoml.search_space.introspect import RECURRENT, ChannelLink, layer_weight
from paretoml.search_space.knobs import STRUCTURED
from paretoml.search_space.space import TrialConfig

#: Kernels that are the module as it is, in the device's float type (nothing to build).
AS_IS = ("fp32", "bf16")


class NoKernelError(ValueError):
    """A layer's format has no kernel of its own for its shape on the device (runtime mode)."""

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
    """A deployed model and the kernel of each knob layer.

    Args:
        model: what runs (on CUDA wrapped in :class:`DeployedModel`).
        device: where it runs.
        layers: one plan per knob layer, in model order.
        deploy: the study's deployment mode the plan followed.
    """

    model: nn.Module
    device: torch.device
    layers: list[LayerPlan] = field(default_factory=list)
    deploy: DeployMode = DEFAULT_DEPLOY

    def resident_bytes(self) -> int:
        """Bytes of the deployed model's parameters and buffers, as they sit on the device:
        the ``model_bytes`` of runtime mode (and what its export writes, tensor for tensor)."""
        return resident_bytes(self.model)

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
        text = f"deployable model on {self.device.type} ({self.deploy.label}): {ran}"
        if self.deploy.mode == DEQUANTIZE_AT_LOAD:
            text += " (weights stored packed, expanded to the float type at load)"
        if self.device.type == "cuda":
            text += " (bf16 elsewhere; timed as a CUDA graph replay when the forward pass can be captured)"
        stand_ins = [layer for layer in self.layers if not layer.native]
        if stand_ins:
            shown = "; ".join(f"{l.name} ({l.format.label} {l.format.kind}) in {l.kernel}" for l in stand_ins[:6])
            more = f" and {len(stand_ins) - 6} more" if len(stand_ins) > 6 else ""
            text += f"; emulated (no kernel of their own format here), ran in the narrowest kernel holding their values: {shown}{more}"
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


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def resident_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers (each tensor once)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def candidate_kernels(fmt: LayerFormat, shape: tuple[int, ...], device: torch.device, available: frozenset[str],
                      deploy: DeployMode = DEFAULT_DEPLOY) -> list[str]:
    """The kernels that may run a layer of this format and shape under ``deploy``: its own
    (runtime); else, with ``emulate``, the narrowest stand-in that takes the shape; every
    layer in the float type (dequantize-at-load). Empty: no kernel can (runtime only)."""
    if deploy.mode == DEQUANTIZE_AT_LOAD:
        return [float_kernel(device)]
    own = [k for k in own_kernels(fmt, device, available) if shape_fits(k, shape, device)]
    if own or deploy.strict:
        return own
    stand_ins = [k for k in stand_in_kernels(fmt, device, available) if shape_fits(k, shape, device)]
    return stand_ins[:1]


def _ordered_names(model: nn.Module, config: TrialConfig) -> tuple[list[str], dict[str, nn.Module]]:
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}

    def position(name: str) -> tuple[int, str]:  # a recurrent matrix sits at its module
        return (order[name], "") if name in order else (order.get(name.rpartition(".")[0], len(order)), name)

    names = sorted(set(config.bits) | set(getattr(config, "act_bits", {}))
                   | {n for n, m in config.prune_method.items() if m == "2:4"}, key=position)
    return names, modules


def plan_layers(model: nn.Module, config: TrialConfig, device: torch.device,
                available: frozenset[str] | None = None, rows: Mapping[str, int] | None = None,
                table: KernelTable | None = None, deploy: DeployMode = DEFAULT_DEPLOY,
                kernels: Mapping[str, str] | None = None) -> list[LayerPlan]:
    """The kernel of every layer the config touches, without building anything.

    Among a layer's candidates (:func:`candidate_kernels`: in runtime mode only kernels of
    its own format), the fastest by ``table`` at the layer's ``rows`` (input rows of the
    latency pass); without them, the first; ``kernels`` (an export's or a trial's record)
    pins a layer's choice where it is a candidate. Raises :class:`NoKernelError` in runtime mode
    for a format with no kernel for the layer's shape.
    """
    available = kernels_on(device) if available is None else available
    names, modules = _ordered_names(model, config)
    plans: list[LayerPlan] = []
    for name in names:
        module = modules.get(name)  # None: a recurrent layer's weight matrix, named by its parameter
        fmt = layer_format(name, _kind(module) if module is not None else RECURRENT, config)
        shape = tuple(layer_weight(model, name).shape)
        candidates = candidate_kernels(fmt, shape, device, available, deploy)
        if not candidates:
            raise NoKernelError(f"layer {name} ({fmt.label} {fmt.kind}, weight {'x'.join(map(str, shape))}) has no "
                                f"kernel of its own format on {device.type}; the space should not offer it "
                                "(set deploy.emulate: true to run it in a wider kernel, latency estimated)")
        kernel = candidates[0]
        if kernels is not None and kernels.get(name) in candidates:
            kernel = kernels[name]
        elif table is not None and rows is not None and name in rows and len(candidates) > 1:
            kernel = min(candidates, key=lambda k: table.get(k, shape[0], shape[1], rows[name]).time_us)
        own_list = candidates if deploy.mode == DEQUANTIZE_AT_LOAD else own_kernels(fmt, device, available)
        own = kernel if kernel in own_list else next((k for k in own_list if shape_fits(k, shape, device)), None)
        plans.append(LayerPlan(name, shape, fmt, own, kernel))
    return plans


def prune_multiples(model: nn.Module, config: TrialConfig, links: Mapping[str, ChannelLink], device: torch.device,
                    deploy: DeployMode = DEFAULT_DEPLOY) -> dict[str, int]:
    """Per structurally pruned layer, the multiple its kept units must be so that it and its
    consumer still fit their kernels: e.g. CPU int4 takes row counts in multiples of 16.
    Only runtime mode needs it: emulation runs a shape its kernel cannot take in a wider one."""
    if not deploy.strict:
        return {}
    available = kernels_on(device)
    modules = dict(model.named_modules())

    def kernels(name: str) -> list[str]:
        module = modules.get(name)
        fmt = layer_format(name, _kind(module) if module is not None else RECURRENT, config)
        return own_kernels(fmt, device, available)

    multiples: dict[str, int] = {}
    for name, link in links.items():
        if config.prune_method.get(name) != STRUCTURED or not config.prune.get(name):
            continue
        multiple = 1
        for kernel in kernels(name):  # the layer's rows: units x block
            rows = tiles(kernel, device)[0]
            multiple = math.lcm(multiple, rows // math.gcd(rows, link.block))
        for kernel in kernels(link.consumer):  # the consumer's inputs: units x block x features
            cols = tiles(kernel, device)[1]
            per_unit = link.features_per_channel * link.block
            multiple = math.lcm(multiple, cols // math.gcd(cols, per_unit))
        if multiple > 1:
            multiples[name] = multiple
    return multiples


def kernel_choices(model: nn.Module, choices: Mapping[str, Mapping[str, list]], device: torch.device,
                   deploy: DeployMode = DEFAULT_DEPLOY) -> dict[str, dict[str, list]]:
    """Of each layer's knob ``choices`` (role -> layer -> values: ``bits``, ``act_bits``,
    ``sparse_2_4``), those that have a kernel of their own format for the layer's shape on
    ``device``; and which weight bits pair with A8 (``a8_bits``) and 2:4 (``sparse_bits``).
    Only runtime mode without emulation drops any (the others run every format)."""
    if not deploy.strict:
        return {role: {name: list(values) for name, values in per.items()} for role, per in choices.items()}
    available = kernels_on(device)
    modules = dict(model.named_modules())
    bits_of, acts_of, sparse_of = (choices.get(r, {}) for r in ("bits", "act_bits", "sparse_2_4"))
    names = set(bits_of) | set(acts_of) | set(sparse_of)

    def runs(name: str, bits: int, act: int | None, pattern: str) -> bool:
        module = modules.get(name)
        fmt = LayerFormat(_kind(module) if module is not None else RECURRENT, bits,
                          act if act == 8 else None, pattern)  # type: ignore[arg-type]
        shape = tuple(layer_weight(model, name).shape)
        return bool(candidate_kernels(fmt, shape, device, available, deploy))

    allowed: dict[str, dict[str, list]] = {"bits": {}, "act_bits": {}, "sparse_2_4": {}, "a8_bits": {},
                                           "sparse_bits": {}}
    for name in sorted(names):
        bits = bits_of.get(name, [32])
        acts = acts_of.get(name, [None])
        if name in bits_of:
            allowed["bits"][name] = [b for b in bits if any(runs(name, b, a, "dense") for a in acts)]
        if name in acts_of:
            allowed["act_bits"][name] = [a for a in acts if any(runs(name, b, a, "dense") for b in bits)]
        if name in sparse_of:
            allowed["sparse_2_4"][name] = [r for r in sparse_of[name]
                                           if not r or any(runs(name, b, None, "2:4") for b in bits)]
            allowed["sparse_bits"][name] = [b for b in bits if runs(name, b, None, "2:4")]
        if 8 in acts:  # which weight bits pair with A8 (the others run float activations)
            allowed["a8_bits"][name] = [b for b in bits if runs(name, b, 8, "dense")]
    return {role: per for role, per in allowed.items() if per}


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
               example: torch.Tensor | ExampleInputs | None = None,
               deploy: DeployMode = DEFAULT_DEPLOY, kernels: Mapping[str, str] | None = None) -> Deployment:
    """The model as it would be deployed under ``deploy``: real kernels per layer, the
    device's dtype.

    ``model`` holds the trial's compressed weights (fake-quantized values, pruned zeros).
    With ``example`` (the latency pass's input), where a format has several kernels of its
    own the fastest at the layer's rows runs, by the device's cached kernel table.
    """
    device = torch.device(device)
    model = model if inplace else copy.deepcopy(model)
    rows = table = None
    if example is not None:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        rows = layer_rows(model, linear, ExampleInputs.of(example).to(device))
        table = kernel_table(device)
    plans = plan_layers(model, config, device, available, rows, table, deploy, kernels)
    modules = dict(model.named_modules())
    weights = {p.name: (modules[p.name].weight.detach().float().clone(),  # type: ignore[union-attr]
                        getattr(modules[p.name], "bias", None)) for p in plans if p.kernel not in AS_IS}
    dtype = compute_dtype(device)
    model.to(device=device, dtype=dtype)
    for plan in plans:
        if plan.kernel in AS_IS:
            continue  # the module as it is, in the device's float type (recurrent layers: always)
        weight, bias = weights[plan.name]
        bias = None if bias is None else bias.detach().float()
        set_module(model, plan.name, build_layer(plan.kernel, weight, bias, plan.format.weight_bits, device))
    wrapped = DeployedModel(model.eval(), dtype, graphs=device.type == "cuda") if device.type == "cuda" \
        else model.eval()
    return Deployment(wrapped, device, plans, deploy)


def kernel_summary(plans: list[LayerPlan]) -> dict[str, Mapping[str, object]]:
    """Per layer: its format, own kernel and the kernel that ran (stored with the trial)."""
    return {p.name: {"format": p.format.label, "own_kernel": p.own_kernel, "kernel": p.kernel} for p in plans}
