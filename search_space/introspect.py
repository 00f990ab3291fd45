"""Walk a real ``torch.nn.Module``: the layers knobs attach to, their sizes and MACs.

Shapes come from one traced forward pass on an example input (``torch.fx`` with shape
propagation). The same trace tells, for each layer, which layer consumes its output
channels: structured pruning needs that to remove channels for real rather than zero them.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

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


@dataclass(frozen=True)
class ChannelLink:
    """How a layer's output channels reach the next layer that reads them."""

    consumer: str
    norms: tuple[str, ...] = ()
    #: Input features of the consumer per producer channel (spatial size when flattened).
    features_per_channel: int = 1


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


def introspect(model: nn.Module, example_input: torch.Tensor) -> list[LayerInfo]:
    """List the knob-able layers of ``model`` in forward order."""
    graph = fx.symbolic_trace(model)
    ShapeProp(graph).propagate(example_input)
    modules = dict(model.named_modules())
    batch = example_input.shape[0]
    layers: list[LayerInfo] = []
    for node in graph.graph.nodes:
        if node.op != "call_module":
            continue
        module = modules[node.target]
        kind = layer_kind(module)
        if kind is None:
            continue
        out_shape = node.meta["tensor_meta"].shape
        out_per_sample = math.prod(out_shape) // batch
        weight = module.weight
        if kind == "linear":
            macs = out_per_sample * module.in_features
            out_channels = module.out_features
        elif kind == "conv":
            macs = out_per_sample * (module.in_channels // module.groups) * math.prod(module.kernel_size)
            out_channels = module.out_channels
        else:
            macs = 0
            out_channels = module.embedding_dim
        link = _channel_link(node, modules) if kind != "embedding" else None
        if kind == "conv" and module.groups != 1:
            link = None
        layers.append(
            LayerInfo(
                name=node.target,
                kind=kind,
                module_type=type(module).__name__,
                weight_shape=tuple(weight.shape),
                num_params=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=int(macs),
                out_channels=int(out_channels),
                link=link,
            )
        )
    if not layers:
        raise ValueError("the model has no Linear, Conv or Embedding layer to attach knobs to")
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
