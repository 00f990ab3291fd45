"""Magnitude pruning at exact per-layer ratios.

Unstructured pruning zeroes the ``round(ratio * numel)`` smallest-magnitude weights of a
layer. Structured pruning removes the ``round(ratio * rows)`` output channels of smallest
L2 norm for real: the layer, the norms behind it and the inputs of the layer that reads it
are rebuilt smaller, so latency is measured on the model that would be deployed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from paretoml.search_space.introspect import ChannelLink


def unstructured_mask(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep-mask with exactly ``round(ratio * numel)`` zeros (ties broken by position)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    n_zero = round(ratio * weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    if n_zero:
        order = torch.argsort(weight.detach().abs().flatten(), stable=True)
        mask[order[:n_zero]] = False
    return mask.reshape(weight.shape)


@torch.no_grad()
def prune_unstructured(model: nn.Module, ratios: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Zero weights in place; returns the keep-masks, so fine-tuning can hold them."""
    modules = dict(model.named_modules())
    masks: dict[str, torch.Tensor] = {}
    for name, ratio in ratios.items():
        weight = modules[name].weight  # type: ignore[union-attr]
        mask = unstructured_mask(weight, ratio)
        weight.mul_(mask)
        masks[name] = mask
    return masks


def channels_to_remove(rows: int, ratio: float) -> int:
    """Rows removed at ``ratio``; at least one row is always kept."""
    return min(round(ratio * rows), rows - 1)


@torch.no_grad()
def prune_structured(
    model: nn.Module, ratios: Mapping[str, float], links: Mapping[str, ChannelLink]
) -> nn.Module:
    """Remove output channels in place (modules are replaced by smaller ones)."""
    for name, ratio in ratios.items():
        if name not in links:
            raise ValueError(f"layer {name!r} cannot be pruned structurally: its channels feed no single layer")
        modules = dict(model.named_modules())
        layer = modules[name]
        weight = layer.weight  # type: ignore[union-attr]
        rows = weight.shape[0]
        removed = channels_to_remove(rows, ratio)
        if removed == 0:
            continue
        norms = weight.reshape(rows, -1).norm(dim=1)
        keep = torch.sort(torch.argsort(norms, descending=True, stable=True)[: rows - removed]).values
        link = links[name]
        _set_module(model, name, _slice_out(layer, keep))
        for norm_name in link.norms:
            _set_module(model, norm_name, _slice_norm(modules[norm_name], keep))
        f = link.features_per_channel
        inputs = (keep[:, None] * f + torch.arange(f, device=keep.device)[None, :]).flatten()
        _set_module(model, link.consumer, _slice_in(modules[link.consumer], inputs))
    return model


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _slice_out(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = _clone_with(layer, out_features=len(keep))
    new.weight.copy_(layer.weight[keep])
    if layer.bias is not None:
        new.bias.copy_(layer.bias[keep])
    return new


def _slice_in(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = _clone_with(layer, in_features=len(keep))
    new.weight.copy_(layer.weight[:, keep])
    if layer.bias is not None:
        new.bias.copy_(layer.bias)
    return new


def _clone_with(layer: nn.Module, out_features: int | None = None, in_features: int | None = None) -> nn.Module:
    weight = layer.weight
    factory = {"device": weight.device, "dtype": weight.dtype}
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        return nn.Linear(in_features or layer.in_features, out_features or layer.out_features, bias=bias, **factory)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return type(layer)(
            in_features or layer.in_channels,
            out_features or layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=bias,
            padding_mode=layer.padding_mode,
            **factory,
        )
    raise TypeError(f"cannot rebuild {type(layer).__name__}")


def _slice_norm(norm: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = type(norm)(len(keep), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                     track_running_stats=norm.track_running_stats)
    new = new.to(device=keep.device)
    if norm.affine:
        new.weight.copy_(norm.weight[keep])
        new.bias.copy_(norm.bias[keep])
    if norm.track_running_stats:
        new.running_mean.copy_(norm.running_mean[keep])
        new.running_var.copy_(norm.running_var[keep])
        new.num_batches_tracked.copy_(norm.num_batches_tracked)
    return new
