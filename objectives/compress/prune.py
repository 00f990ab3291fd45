"""Magnitude pruning at exact per-layer ratios.

Unstructured pruning zeroes the ``round(ratio * numel)`` smallest-magnitude weights of a
layer. Structured pruning removes the ``round(ratio * rows)`` output channels of smallest
L2 norm for real: the layer, the norms behind it and the inputs of the layer that reads it
are rebuilt smaller, so latency is measured on the model that would be deployed. The same
mechanism prunes transformers: an FFN's intermediate neurons (rows of its first layer,
columns of its second), and whole attention heads (blocks of ``head_dim`` rows of the
query, key and value projections, ranked together, and the matching columns of the
attention output), as described by the task's :class:`ChannelLink`, which also names the
attributes that follow the kept heads (head counts, per-head tensors). Under grouped-query
attention a unit is one KV head with its group of query heads (``ChannelLink.sibling_block``):
they go together, so every kept query head still reads its own key and value head.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from paretoml.search_space.introspect import ChannelLink
from paretoml.search_space.model_bytes import channels_to_remove


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


@torch.no_grad()
def prune_structured(
    model: nn.Module, ratios: Mapping[str, float], links: Mapping[str, ChannelLink],
    multiples: Mapping[str, int] | None = None,
) -> nn.Module:
    """Remove output channels in place (modules are replaced by smaller ones); a layer in
    ``multiples`` keeps a multiple of that many units (its kernels' tiles)."""
    for name, ratio in ratios.items():
        if name not in links:
            raise ValueError(f"layer {name!r} cannot be pruned structurally: its channels feed no single layer")
        modules = dict(model.named_modules())
        layer = modules[name]
        link = links[name]
        producers = [name, *link.siblings]
        rows = layer.weight.shape[0]  # type: ignore[union-attr]
        units = rows // link.block
        removed = channels_to_remove(units, ratio, (multiples or {}).get(name, 1))
        if removed == 0:
            continue
        # rank channels (or blocks of rows: attention heads) by the L2 norm of every
        # producer's rows together
        norms = torch.stack(
            [modules[p].weight.reshape(units, -1).norm(dim=1) ** 2 for p in producers]  # type: ignore[union-attr]
        ).sum(dim=0)
        kept_units = torch.sort(torch.argsort(norms, descending=True, stable=True)[: units - removed]).values
        keep = _expand(kept_units, link.block)
        sibling_keep = keep if link.sibling_block is None else _expand(kept_units, link.sibling_block)
        for producer in producers:
            rows_kept = keep if producer == name else sibling_keep
            _set_module(model, producer, _slice_out(modules[producer], rows_kept))
        for norm_name in link.norms:
            _set_module(model, norm_name, _slice_norm(modules[norm_name], keep))
        _set_module(model, link.consumer, _slice_in(modules[link.consumer], _expand(keep, link.features_per_channel)))
        for module_name, attribute, per in link.resize:
            setattr(model.get_submodule(module_name), attribute, len(keep) // per)
        for module_name, attribute, dim in link.unit_tensors:
            _select_units(model.get_submodule(module_name), attribute, dim, kept_units)
    return model


def _select_units(owner: nn.Module, attribute: str, dim: int, kept_units: torch.Tensor) -> None:
    """Keep the entries of ``owner.attribute`` (a parameter or buffer) of the kept units."""
    tensor = getattr(owner, attribute)
    kept = tensor.detach().index_select(dim, kept_units.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        kept = nn.Parameter(kept, requires_grad=tensor.requires_grad)
    setattr(owner, attribute, kept)  # a registered buffer stays registered


def _expand(indices: torch.Tensor, width: int) -> torch.Tensor:
    """Row indices of the blocks ``indices`` when each block is ``width`` rows wide."""
    if width == 1:
        return indices
    return (indices[:, None] * width + torch.arange(width, device=indices.device)[None, :]).flatten()


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
