"""A configuration described by what it does to each layer, in terms that carry across models.

Parameter names (``bits:encoder.layer.3.attention.self``) mean nothing to another model, so a
surrogate that learns from other studies (``surrogates.transfer``) describes a configuration
per layer by what carries from model to model: the layer's kind, its relative depth, its share
of the parameters, its fan-in and fan-out, the knob values it gets (weight bits, pruning
ratio, merge coefficient) and, where the study measured it, the drop of the task metric with
only that layer at those bits (``surrogates.sensitivity``). Layers are then aggregated into one
fixed-length vector, so models of 4 and of 73 layers share one feature space:

* ``global``: parameter-weighted means over all layers (the weight-bytes ratio to fp32, mean
  log2 bits, mean pruning), the fewest bits, the share of parameters at 2-3 and at <= 4 bits;
* ``kind``: the same means within each layer kind (linear, conv, embedding);
* ``depth``: the same means within thirds of the relative depth (first, middle, last layers);
* ``fan``: fan-in-weighted mean bits, the bits of the widest-input and narrowest-output layer;
* ``merge``: mean, min and max merge coefficient (missing where nothing is merged);
* ``sens``: the summed and the largest measured per-layer drop at the chosen bits (missing
  where the study has no sensitivities).

A group that does not apply to a model is NaN (XGBoost learns a default branch for missing
values), never a made-up number. Which groups pay off was measured, not assumed:
``benchmarks/transfer.py features`` (results in ``benchmarks/results/transfer-*.md``).
Nothing here reads a layer's name, so two models that differ only in names get the same
features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from paretoml.search_space.encoding import VectorEncoding

#: layer kinds as ``search_space.introspect`` names them
LAYER_KINDS = ("linear", "conv", "embedding")
#: a layer that no bitwidth knob touches keeps its fp32 weights
UNCOMPRESSED_BITS = 32
#: relative-depth bins of the ``depth`` group
DEPTH_BINS = 3
#: per-layer roles of ``JointSpace.param_layers`` that describe a layer
_LAYER_ROLES = ("bits", "prune", "merge")


@dataclass(frozen=True)
class LayerTable:
    """One model's layers, described without their names.

    Args:
        names: the layers in forward order (only to look configurations up; never a feature).
        kinds: each layer's kind (``LAYER_KINDS``).
        depth: relative depth in [0, 1] (forward order).
        share: share of the layers' parameters.
        fan_in: log2 of the inputs per output (``prod(weight_shape[1:])``).
        fan_out: log2 of the outputs (``weight_shape[0]``).
        sensitivity: per layer, bits -> drop of the task metric with only that layer at these
            bits, as a fraction of the uncompressed metric; None where not measured.
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    depth: np.ndarray
    share: np.ndarray
    fan_in: np.ndarray
    fan_out: np.ndarray
    sensitivity: tuple[dict[int, float], ...] | None = None

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]],
                  sensitivity: Mapping[str, Mapping[int, float]] | None = None) -> LayerTable:
        """From a study's stored layer table (``paretoml:layers`` rows: name, kind,
        weight_shape, num_params, ...) and, optionally, its measured sensitivities."""
        if not rows:
            raise ValueError("the layer table is empty")
        names = tuple(str(r["name"]) for r in rows)
        shapes = [tuple(int(s) for s in r["weight_shape"]) for r in rows]
        params = np.array([float(r["num_params"]) for r in rows])
        n = len(rows)
        sens = None
        if sensitivity:
            sens = tuple({int(b): float(v) for b, v in sensitivity.get(name, {}).items()} for name in names)
        return cls(
            names=names,
            kinds=tuple(str(r["kind"]) for r in rows),
            depth=np.arange(n) / max(n - 1, 1),
            share=params / params.sum(),
            fan_in=np.log2([max(1, int(np.prod(s[1:]))) for s in shapes]),
            fan_out=np.log2([max(1, s[0]) for s in shapes]),
            sensitivity=sens,
        )

    @property
    def kind_set(self) -> set[str]:
        return set(self.kinds)


@dataclass(frozen=True)
class LayerValues:
    """The knob values of ``m`` configurations on ``n`` layers: arrays of shape ``(m, n)``."""

    bits: np.ndarray
    prune: np.ndarray
    #: mean merge coefficient of the layer; NaN where the layer is not merged
    merge: np.ndarray

    @classmethod
    def from_configs(cls, table: LayerTable, configs: Sequence[Mapping[str, Any]]) -> LayerValues:
        """From stored per-layer configs (``TrialConfig.to_dict()``, the ``paretoml:config``
        trial attribute)."""
        m, n = len(configs), len(table.names)
        bits = np.full((m, n), float(UNCOMPRESSED_BITS))
        prune = np.zeros((m, n))
        merge = np.full((m, n), np.nan)
        index = {name: j for j, name in enumerate(table.names)}
        for i, config in enumerate(configs):
            for name, value in (config.get("bits") or {}).items():
                if name in index:
                    bits[i, index[name]] = float(value)
            for name, value in (config.get("prune") or {}).items():
                if name in index:
                    prune[i, index[name]] = float(value)
            for name, value in (config.get("merge") or {}).items():
                if name in index and len(value):
                    merge[i, index[name]] = float(np.mean(value))
        return cls(bits, prune, merge)

    @classmethod
    def from_points(cls, table: LayerTable, encoding: VectorEncoding,
                    param_layers: Mapping[str, tuple[str, Sequence[str]]], points: np.ndarray) -> LayerValues:
        """From encoded points of a study's space (candidates of a sampler), vectorised;
        ``param_layers`` is ``JointSpace.param_layers`` (parameter -> role, layers)."""
        points = np.atleast_2d(points)
        values = encoding.decode_values(points)
        m, n = len(points), len(table.names)
        bits = np.full((m, n), float(UNCOMPRESSED_BITS))
        prune = np.zeros((m, n))
        merge_sum = np.zeros((m, n))
        merge_count = np.zeros(n)
        index = {name: j for j, name in enumerate(table.names)}
        for param, (role, layers) in param_layers.items():
            if role not in _LAYER_ROLES or param not in values:
                continue
            columns = [index[layer] for layer in layers if layer in index]
            if not columns:
                continue
            value = values[param][:, None]
            if role == "bits":
                bits[:, columns] = value
            elif role == "prune":
                prune[:, columns] = value
            else:
                merge_sum[:, columns] += value
                merge_count[columns] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            merge = np.where(merge_count > 0, merge_sum / np.maximum(merge_count, 1), np.nan)
        return cls(bits, prune, merge)


def feature_names() -> list[str]:
    """The names of ``aggregate``'s columns, ``group.what``."""
    names = ["global.bytes_ratio", "global.log_bits", "global.prune", "global.min_log_bits",
             "global.share_le3", "global.share_le4", "global.max_prune"]
    for kind in LAYER_KINDS:
        names += [f"kind.{kind}.log_bits", f"kind.{kind}.prune"]
    for b in range(DEPTH_BINS):
        names += [f"depth.{b}.log_bits", f"depth.{b}.prune"]
    names += ["fan.in_weighted_log_bits", "fan.widest_in_log_bits", "fan.narrowest_out_log_bits"]
    names += ["merge.mean", "merge.min", "merge.max"]
    names += ["sens.sum", "sens.max"]
    return names


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise mean of ``values`` (m, n) by ``weights`` (n,); NaN where the weights are all 0."""
    total = weights.sum()
    if total <= 0:
        return np.full(len(values), np.nan)
    return values @ weights / total


def _sensitivity(table: LayerTable, bits: np.ndarray) -> np.ndarray:
    """(m, n) measured drop of each layer at its bits (nearest measured bits at or below;
    no drop above the widest measured, e.g. an unquantized layer); NaN without sensitivities."""
    m, n = bits.shape
    out = np.full((m, n), np.nan)
    if table.sensitivity is None:
        return out
    for j, measured in enumerate(table.sensitivity):
        if not measured:
            out[:, j] = 0.0
            continue
        levels = np.array(sorted(measured))
        drops = np.array([measured[b] for b in levels])
        at = np.searchsorted(levels, bits[:, j], side="right") - 1
        out[:, j] = np.where(at < 0, drops[0], drops[np.clip(at, 0, len(levels) - 1)])
        out[bits[:, j] > levels[-1], j] = 0.0
    return out


def aggregate(table: LayerTable, values: LayerValues) -> np.ndarray:
    """The fixed-length features (``feature_names()``) of each configuration: (m, F)."""
    bits, prune, merge = values.bits, values.prune, values.merge
    log_bits = np.log2(bits)
    share = table.share
    columns: list[np.ndarray] = [
        _weighted_mean(bits / UNCOMPRESSED_BITS * (1 - prune), share),
        _weighted_mean(log_bits, share),
        _weighted_mean(prune, share),
        log_bits.min(axis=1),
        _weighted_mean((bits <= 3).astype(float), share),
        _weighted_mean((bits <= 4).astype(float), share),
        prune.max(axis=1),
    ]
    kinds = np.array(table.kinds)
    for kind in LAYER_KINDS:
        weights = share * (kinds == kind)
        columns += [_weighted_mean(log_bits, weights), _weighted_mean(prune, weights)]
    bins = np.minimum((table.depth * DEPTH_BINS).astype(int), DEPTH_BINS - 1)
    for b in range(DEPTH_BINS):
        weights = share * (bins == b)
        columns += [_weighted_mean(log_bits, weights), _weighted_mean(prune, weights)]
    fan_in = 2.0 ** table.fan_in
    columns += [_weighted_mean(log_bits, fan_in), log_bits[:, int(np.argmax(table.fan_in))],
                log_bits[:, int(np.argmin(table.fan_out))]]
    merged = ~np.isnan(merge)
    if merged.any():
        weights = share * merged.any(axis=0)
        columns += [_weighted_mean(np.nan_to_num(merge), weights), np.nanmin(merge, axis=1), np.nanmax(merge, axis=1)]
    else:
        columns += [np.full(len(bits), np.nan)] * 3
    drop = _sensitivity(table, bits)
    columns += [drop.sum(axis=1), drop.max(axis=1)]
    return np.stack(columns, axis=1)


def group_columns(groups: Sequence[str]) -> np.ndarray:
    """Indices of the features of the named groups (``global``, ``kind``, ...): for measuring
    what each group adds."""
    return np.array([i for i, name in enumerate(feature_names()) if name.split(".")[0] in groups], dtype=int)
