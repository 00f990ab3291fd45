"""Walk a real ``torch.nn.Module``: the layers knobs attach to, their sizes and MACs.

Shapes come from one traced forward pass on an example input (``torch.fx`` with shape
propagation). The same trace tells, for each layer, which layer consumes its output
channels: structured pruning needs that to remove channels for real rather than zero them.

Many real models (most Hugging Face ones) cannot be traced by ``torch.fx``; they are then
walked module by module, with forward hooks recording each layer's output shape on the
example inputs (MACs follow from them). Channel links cannot be found without a graph, so
the task may give them (e.g. attention heads and FFN neurons of a transformer).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from paretoml.search_space.example_fit import run_example
from paretoml.search_space.knobs import Grouping

_LAYER_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Linear, "linear"),
    (nn.Conv1d, "conv"),
    (nn.Conv2d, "conv"),
    (nn.Conv3d, "conv"),
    (nn.Embedding, "embedding"),
)

# Ops that keep the channel axis intact, so a channel removed upstream can be removed below.
_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Hardswish,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
)
_PASS_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, torch.tanh, torch.sigmoid,
    F.dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool2d,
}
_PASS_METHODS = {"relu", "tanh", "sigmoid"}


#: The kind of a recurrent layer's weight matrix (nn.GRU, nn.LSTM, nn.RNN): each matrix
#: (``weight_ih_l0``, ``weight_hh_l0``, ..., ``_reverse``) is a layer of its own, named by its
#: parameter (``gru.weight_hh_l0``), quantized weight-only (no pruning: its rows are gates).
RECURRENT = "recurrent"
_RECURRENT_TYPES: tuple[type[nn.Module], ...] = (nn.RNNBase,)


def recurrent_weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weight matrices of a recurrent module, in its parameter order (projections too)."""
    return [(n, p) for n, p in module.named_parameters(recurse=False) if n.startswith("weight_")]


def weight_key(name: str, kind: str) -> str:
    """The state-dict key of a layer's weight: ``conv1.weight``, or a recurrent matrix's own name."""
    return name if kind == RECURRENT else f"{name}.weight"


def layer_weight(model: nn.Module, name: str) -> torch.Tensor:
    """The weight a knob of layer ``name`` turns: the module's ``weight``, or, for a recurrent
    layer, the matrix parameter of that name."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return model.get_parameter(name)
    return module.weight  # type: ignore[return-value]


@dataclass(frozen=True)
class ChannelLink:
    """How a layer's output channels reach the next layer that reads them."""

    consumer: str
    norms: tuple[str, ...] = ()
    #: Input features of the consumer per producer channel (spatial size when flattened).
    features_per_channel: int = 1
    #: Channels are removed in blocks of this many rows (an attention head's width).
    block: int = 1
    #: Layers whose output rows are removed together with the producer's (key and value
    #: projections beside the query's); they are ranked together.
    siblings: tuple[str, ...] = ()
    #: Rows per unit of each sibling where they differ from ``block``: grouped-query attention,
    #: where a unit is one KV head (``head_dim`` rows of the key and value projections) and
    #: its group of query heads (``group * head_dim`` rows of the query projection).
    sibling_block: int | None = None
    #: ``(module, attribute, per)``: after pruning, ``module.attribute = kept_rows // per``
    #: (e.g. an attention module's head count).
    resize: tuple[tuple[str, str, int], ...] = ()
    #: ``(module, attribute, dim)``: a tensor (parameter or buffer) with one entry per unit
    #: (block of rows) along ``dim``; after pruning it keeps the kept units' entries (e.g. the
    #: indices of the heads at which a relative position bias shared by all blocks is read).
    unit_tensors: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str
    module_type: str
    weight_shape: tuple[int, ...]
    num_params: int
    #: Multiply-accumulates per sample, from the traced shapes.
    macs: int
    out_channels: int
    #: Set when the output channels can be physically removed (structured pruning).
    link: ChannelLink | None = field(default=None, compare=False)

    @property
    def structured_ok(self) -> bool:
        return self.link is not None


def layer_kind(module: nn.Module) -> str | None:
    for cls, kind in _LAYER_KINDS:
        if isinstance(module, cls):
            return kind
    return None


def introspect(
    model: nn.Module, example_input: Any, links: Mapping[str, ChannelLink] | None = None
) -> list[LayerInfo]:
    """List the knob-able layers of ``model`` in forward order.

    ``example_input`` is a tensor, a tuple of args, a dict of kwargs, or anything with
    ``args`` and ``kwargs`` (an ``ExampleInputs``). ``links`` add or replace channel links.
    """
    args, kwargs = _as_call(example_input)
    run_example(model, args, kwargs)  # inputs that do not fit: one line, not torch's (or fx's) traceback
    layers: list[LayerInfo] | None = None
    if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
        try:
            layers = _introspect_traced(model, args[0])
        except Exception:  # torch.fx cannot trace every model: walk it with hooks instead
            layers = None
    if layers is None:
        layers = _introspect_by_hooks(model, args, kwargs)
    if links:
        layers = [replace(layer, link=links.get(layer.name, layer.link)) for layer in layers]
    return layers


def _as_call(example: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if hasattr(example, "args") and hasattr(example, "kwargs"):
        return tuple(example.args), dict(example.kwargs)
    if isinstance(example, Mapping):
        return (), dict(example)
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    return (example,), {}


def _first_tensor(values: Any) -> torch.Tensor | None:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    return None


def _macs_and_channels(module: nn.Module, kind: str, out_per_sample: int) -> tuple[int, int]:
    if kind == "linear":
        return out_per_sample * module.in_features, module.out_features
    if kind == "conv":
        return (out_per_sample * (module.in_channels // module.groups) * math.prod(module.kernel_size),
                module.out_channels)
    return 0, module.embedding_dim


def _recurrent_infos(name: str, module: nn.Module, input_shape: tuple[int, ...] | None,
                     batch: int) -> list[LayerInfo]:
    """One layer per weight matrix of a recurrent module; MACs from the timesteps of its input."""
    width = module.input_size  # type: ignore[attr-defined]
    steps = math.prod(input_shape) // (max(batch, 1) * width) if input_shape else 1
    infos = []
    for attr, weight in recurrent_weights(module):
        bias = getattr(module, attr.replace("weight_", "bias_", 1), None)
        infos.append(LayerInfo(
            name=f"{name}.{attr}" if name else attr, kind=RECURRENT, module_type=type(module).__name__,
            weight_shape=tuple(weight.shape),
            num_params=weight.numel() + (bias.numel() if isinstance(bias, torch.Tensor) else 0),
            macs=int(weight.numel() * steps), out_channels=int(weight.shape[0]), link=None))
    return infos


def _layer_info(name: str, module: nn.Module, kind: str, out_per_sample: int,
                link: ChannelLink | None) -> LayerInfo:
    macs, out_channels = _macs_and_channels(module, kind, out_per_sample)
    return LayerInfo(
        name=name,
        kind=kind,
        module_type=type(module).__name__,
        weight_shape=tuple(module.weight.shape),
        num_params=sum(p.numel() for p in module.parameters(recurse=False)),
        macs=int(macs),
        out_channels=int(out_channels),
        link=link,
    )


@torch.no_grad()
def _introspect_by_hooks(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[LayerInfo]:
    """Module walk + forward hooks: layers in the order they first run, shapes as seen."""
    shapes: dict[str, tuple[int, ...]] = {}
    modules = {name: m for name, m in model.named_modules()
               if layer_kind(m) is not None or isinstance(m, _RECURRENT_TYPES)}

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, kw: dict[str, Any], output: Any) -> None:
            if name in shapes:
                return
            if isinstance(module, _RECURRENT_TYPES):  # (output, state): its input tells the timesteps
                first = _first_tensor((*inputs, *kw.values()))
                if first is not None:
                    shapes[name] = tuple(first.shape)
            elif isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape)
        return record

    handles = [m.register_forward_hook(hook(name), with_kwargs=True) for name, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    first = _first_tensor((*args, *kwargs.values()))
    batch = int(first.shape[0]) if first is not None and first.dim() > 0 else 1
    layers = []
    for name, shape in shapes.items():  # dicts keep insertion order: the forward order
        module = modules[name]
        if isinstance(module, _RECURRENT_TYPES):
            layers.extend(_recurrent_infos(name, module, shape, batch))
            continue
        kind = layer_kind(module)
        assert kind is not None
        layers.append(_layer_info(name, module, kind, math.prod(shape) // batch, None))
    if not layers:
        raise ValueError("the model has no Linear, Conv, Embedding or recurrent layer to attach knobs to")
    return layers


def _introspect_traced(model: nn.Module, example_input: torch.Tensor) -> list[LayerInfo]:
    graph = fx.symbolic_trace(model)
    ShapeProp(graph).propagate(example_input)
    modules = dict(model.named_modules())
    batch = example_input.shape[0]
    layers: list[LayerInfo] = []
    for node in graph.graph.nodes:
        if node.op != "call_module":
            continue
        module = modules[node.target]
        if isinstance(module, _RECURRENT_TYPES):
            source = node.args[0] if node.args else None
            meta = getattr(source, "meta", {}).get("tensor_meta")
            layers.extend(_recurrent_infos(node.target, module, tuple(meta.shape) if meta is not None else None,
                                           batch))
            continue
        kind = layer_kind(module)
        if kind is None:
            continue
        out_shape = node.meta["tensor_meta"].shape
        link = _channel_link(node, modules) if kind != "embedding" else None
        if kind == "conv" and module.groups != 1:
            link = None
        layers.append(_layer_info(node.target, module, kind, math.prod(out_shape) // batch, link))
    if not layers:
        raise ValueError("the model has no Linear, Conv, Embedding or recurrent layer to attach knobs to")
    return layers


def _channel_link(node: fx.Node, modules: dict[str, nn.Module]) -> ChannelLink | None:
    """Follow a single chain of channel-preserving ops to the next Linear/Conv."""
    norms: list[str] = []
    per_channel = 1
    current = node
    while True:
        users = list(current.users)
        if len(users) != 1:
            return None
        nxt = users[0]
        if nxt.op == "call_module":
            module = modules[nxt.target]
            if isinstance(module, (nn.Linear,)) or (
                isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.groups == 1
            ):
                if nxt.args[0] is not current:
                    return None
                return ChannelLink(nxt.target, tuple(norms), per_channel)
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                norms.append(nxt.target)
            elif isinstance(module, nn.Flatten):
                per_channel *= _flatten_factor(current, module.start_dim)
                if per_channel == 0:
                    return None
            elif not isinstance(module, _PASS_MODULES):
                return None
        elif nxt.op == "call_function" and nxt.target in _PASS_FUNCTIONS:
            if nxt.args[0] is not current:
                return None
        elif nxt.op == "call_function" and nxt.target is torch.flatten:
            start = nxt.args[1] if len(nxt.args) > 1 else nxt.kwargs.get("start_dim", 0)
            per_channel *= _flatten_factor(current, start)
            if per_channel == 0:
                return None
        elif nxt.op == "call_method" and nxt.target in _PASS_METHODS:
            pass
        elif nxt.op == "call_method" and nxt.target == "flatten":
            start = nxt.args[1] if len(nxt.args) > 1 else nxt.kwargs.get("start_dim", 0)
            per_channel *= _flatten_factor(current, start)
            if per_channel == 0:
                return None
        elif nxt.op == "call_function" and nxt.target is operator.getitem:
            return None
        else:
            return None
        current = nxt


def _flatten_factor(node: fx.Node, start_dim: int) -> int:
    """Elements per channel merged by a flatten of a (N, C, ...) tensor from ``start_dim``."""
    shape = node.meta["tensor_meta"].shape
    if start_dim != 1 or len(shape) < 2:
        return 0
    return math.prod(shape[2:])


def group_key(layer_name: str, grouping: Grouping, block_depth: int | None = None) -> str:
    """Name of the group a layer's knob is shared within."""
    if grouping == "layer":
        return layer_name
    if grouping == "shared":
        return "all"
    parts = layer_name.split(".")
    if block_depth is None:
        return ".".join(parts[:-1]) or parts[0]
    return ".".join(parts[:block_depth])


def group_layers(
    layer_names: list[str], grouping: Grouping, block_depth: int | None = None
) -> dict[str, list[str]]:
    """Groups in first-seen order, each with its layers in forward order."""
    groups: dict[str, list[str]] = {}
    for name in layer_names:
        groups.setdefault(group_key(name, grouping, block_depth), []).append(name)
    return groups
