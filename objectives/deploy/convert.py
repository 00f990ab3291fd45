"""The deployable form of a compressed model: each knob-bearing layer swapped for the
kernel its format and the device call for (:mod:`.formats`), the rest in the device's
float type (fp32 on CPU, bf16 on CUDA)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.utils._pytree as pytree
from torch import nn

from paretoml.objectives.deploy import kernels as K
from paretoml.objectives.deploy.formats import (
    LayerFormat,
    compute_dtype,
    float_kernel,
    kernels_on,
    own_kernel,
    stand_in_kernels,
)
from paretoml.objectives.deploy.pack import to_int_weight
from paretoml.objectives.deploy.torchao_kernels import TORCHAO_KERNELS, build_torchao, our_kernel
from paretoml.objectives.tasks.base import ExampleInputs
from paretoml.search_space.introspect import RECURRENT, layer_weight
from paretoml.search_space.space import TrialConfig

#: Kernels that are the module as it is, in the device's float type (nothing to build).
_AS_IS = ("fp32", "bf16")

if TYPE_CHECKING:
    from paretoml.objectives.deploy.kernel_table import KernelTable

_TABLES: dict[str, KernelTable] = {}


def kernel_table(device: torch.device) -> KernelTable:
    """This process's view of the device's kernel table (one per device)."""
    from paretoml.objectives.deploy.kernel_table import KernelTable

    key = str(device)
    if key not in _TABLES:
        _TABLES[key] = KernelTable(device)
    return _TABLES[key]


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
        return self.own_kernel is not None and our_kernel(self.kernel) == our_kernel(self.own_kernel)


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


class DeployedModel(nn.Module):
    """Runs ``inner`` in the device's compute dtype: float inputs are cast on the way in,
    float outputs back to fp32 on the way out (metrics see the same dtype everywhere).

    On CUDA, inference calls repeating one set of input shapes run as a CUDA graph replay,
    as deployed GPU models are served: one launch for the whole forward pass, so the latency
    is the kernels' and not Python's. Inputs are any structure of tensors (positional or
    keyword: a Hugging Face model's ``input_ids`` and ``attention_mask``). A graph is
    captured on the second call with the same shapes (the first warms up); a model that
    cannot be captured (an op that waits for the host) runs eagerly.
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype, graphs: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype
        self.graphs = graphs
        self._graph: _Graph | None = None
        self._last_key: object = None
        self._uncapturable: set[object] = set()

    def _cast_in(self, value: object) -> object:
        return value.to(self.dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    @staticmethod
    def _cast_out(out: object) -> object:
        if isinstance(out, torch.Tensor):
            return out.to(torch.float32) if out.is_floating_point() else out
        if isinstance(out, dict):  # e.g. a Hugging Face ModelOutput: its float tensors, in place
            for key, value in list(out.items()):
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    out[key] = value.to(torch.float32)
        return out

    def _eager(self, *args: object, **kwargs: object) -> object:
        out = self.inner(*(self._cast_in(a) for a in args), **{k: self._cast_in(v) for k, v in kwargs.items()})
        return self._cast_out(out)

    def forward(self, *args: object, **kwargs: object) -> object:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
        if not (self.graphs and tensors and all(t.is_cuda for t in tensors) and torch.is_inference_mode_enabled()):
            return self._eager(*args, **kwargs)
        key = _graph_key(spec, leaves)
        if self._graph is not None and self._graph.key == key:
            return self._graph.replay(tensors)
        if key == self._last_key and key not in self._uncapturable:
            try:
                self._graph = self._capture(key, leaves, spec)
                return self._graph.replay(tensors)
            except Exception:  # an op that syncs with the host or is not capturable
                self._graph = None
                self._uncapturable.add(key)
        self._last_key = key
        return self._eager(*args, **kwargs)

    def _capture(self, key: object, leaves: list[object], spec: pytree.TreeSpec) -> _Graph:
        """Capture one forward pass on static copies of the inputs (after two warm-up passes
        on a side stream, as CUDA graph capture requires)."""
        self._graph = None  # one graph at a time: its memory pool is freed with it
        static = [leaf.clone() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
        args, kwargs = pytree.tree_unflatten(static, spec)
        device = next(leaf for leaf in static if isinstance(leaf, torch.Tensor)).device
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._eager(*args, **kwargs)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._eager(*args, **kwargs)
        return _Graph(key, graph, [leaf for leaf in static if isinstance(leaf, torch.Tensor)], out)


@dataclass
class _Graph:
    """A captured forward pass: the inputs it reads, the outputs it writes."""

    key: object
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    output: object

    def replay(self, tensors: list[torch.Tensor]) -> object:
        for static, value in zip(self.inputs, tensors):
            static.copy_(value)
        self.graph.replay()
        # the caller gets its own tensors: the next replay overwrites the static outputs
        return pytree.tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, self.output)


def _graph_key(spec: pytree.TreeSpec, leaves: list[object]) -> object:
    """Inputs that can share a graph: the same structure, tensor shapes and dtypes, and equal
    non-tensor values."""
    described = tuple(("tensor", tuple(leaf.shape), leaf.dtype, leaf.device) if isinstance(leaf, torch.Tensor)
                      else ("value", repr(leaf)) for leaf in leaves)
    return str(spec), described


def build_kernel(kernel: str, weight: torch.Tensor, bias: torch.Tensor | None, bits: int,
                 device: torch.device) -> nn.Module:
    """A Linear running ``kernel`` on ``weight`` (fp32, values on the trial's grid)."""
    if kernel in TORCHAO_KERNELS:
        return build_torchao(kernel, weight, bias, bits, device, compute_dtype(device))
    weight = weight.detach().to(device=device, dtype=torch.float32)
    bias = None if bias is None else bias.detach().to(device=device, dtype=compute_dtype(device))
    if kernel in ("int8-dynamic", "int8-weight-only", "int4-weight-only"):
        iw = to_int_weight(weight, min(bits, 8))
        if kernel == "int8-dynamic":
            return K.Int8DynamicLinear(iw, bias).to(device)
        if kernel == "int8-weight-only":
            return K.Int8WeightOnlyLinear(iw, bias, compute_dtype(device)).to(device)
        return K.Int4WeightOnlyLinear(iw, bias, device)
    if kernel == "fp8-rowwise":
        return K.Fp8Linear(weight, bias).to(device)
    if kernel == "sparse-2:4":
        return K.SemiSparseLinear(weight, bias, compute_dtype(device)).to(device)
    if kernel == "emulated-a8":
        return K.EmulatedA8Linear(weight, bias, compute_dtype(device)).to(device)
    raise ValueError(f"unknown kernel {kernel!r}")


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
    kernel = our_kernel(kernel)  # torchao's: as ours of the same format
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
