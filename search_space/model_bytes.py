"""The packed format's byte arithmetic: one formula for the ``model_bytes`` objective, the
``max_model_bytes`` budget and the warm start.

Sizes follow one documented packed format, so they are comparable across trials and can
be checked by hand:

* a quantized weight (2..8 bits) stores ``bits`` per kept value plus one fp16 scale per
  output channel; a 16-bit weight stores fp16 values and no scale; a weight without a
  bitwidth knob stays fp32;
* unstructured sparsity is stored as the cheaper of the dense tensor and a bitmap (one bit
  per element) plus the kept values;
* structured pruning shrinks the tensors themselves;
* biases and every other parameter or buffer (e.g. batch-norm statistics) stay fp32.

It is arithmetic on shapes, counts and a config, so it lives on the ground floor:
``objectives.measure`` applies it to the non-zeros of real tensors, :func:`estimate_model_bytes`
to the counts a config implies before a trial runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.knobs import STRUCTURED
from paretoml.search_space.space import TrialConfig

__all__ = ["FP16_SCALE_BYTES", "channels_to_remove", "estimate_model_bytes", "mean_bits",
           "packed_weight_bits", "packed_weight_bytes"]

FP16_SCALE_BYTES = 2


def packed_weight_bits(numel: int, nnz: int, rows: int, bits: int) -> int:
    """Bits to store one weight tensor of ``numel`` values, ``nnz`` of them non-zero."""
    if bits >= 32:
        return 32 * numel
    scale_bits = 0 if bits == 16 else 8 * FP16_SCALE_BYTES * rows
    dense = bits * numel
    bitmap = numel + bits * nnz
    return min(dense, bitmap) + scale_bits


def packed_weight_bytes(numel: int, nnz: int, rows: int, bits: int) -> int:
    return math.ceil(packed_weight_bits(numel, nnz, rows, bits) / 8)


def channels_to_remove(rows: int, ratio: float, multiple: int = 1) -> int:
    """Rows structured pruning removes at ``ratio``; at least one row is always kept, and the
    kept rows are rounded up to a ``multiple`` (a kernel's tile: CPU int4 takes rows in
    sixteens), so pruning never leaves a shape the layer's kernel cannot take."""
    removed = min(round(ratio * rows), rows - 1)
    if multiple > 1 and removed:
        kept = min(rows, -(-(rows - removed) // multiple) * multiple)
        removed = rows - kept
    return removed


def estimate_model_bytes(layers: Sequence[LayerInfo], config: TrialConfig, other_params: int) -> int:
    """Packed bytes predicted from bitwidths and pruning ratios.

    ``other_params`` counts the fp32 parameters and buffers outside the layers' weights
    (biases, norms). Structured pruning removes rows here, the matching inputs of the
    consuming layer, and the bias and norm entries of the removed channels. The only zeros
    counted are the pruned ones: weights that rounding to few bits makes zero save more in
    the measured bytes, so this is an upper bound of them.
    """
    removed_rows: dict[str, int] = {}
    removed_inputs: dict[str, int] = {}
    other_bytes = 4 * other_params
    for layer in layers:
        if config.prune_method.get(layer.name) != STRUCTURED or layer.link is None:
            continue
        removed = channels_to_remove(layer.out_channels, config.prune.get(layer.name, 0.0))
        removed_rows[layer.name] = removed
        removed_inputs[layer.link.consumer] = removed * layer.link.features_per_channel
        has_bias = layer.num_params > _numel(layer.weight_shape)
        # a bias entry per channel, and weight, bias, running mean and var per norm channel
        other_bytes -= 4 * removed * (int(has_bias) + 4 * len(layer.link.norms))
    total = other_bytes
    for layer in layers:
        shape = layer.weight_shape
        rows = shape[0] - removed_rows.get(layer.name, 0)
        per_row = _numel(shape) // shape[0]
        if layer.name in removed_inputs:
            per_row = per_row * (shape[1] - removed_inputs[layer.name]) // shape[1]
        numel = rows * per_row
        bits = config.bits.get(layer.name, 32)
        if config.prune_method.get(layer.name) == STRUCTURED:
            nnz = numel
        else:
            nnz = numel - round(config.prune.get(layer.name, 0.0) * numel)
        total += packed_weight_bytes(numel, nnz, rows, bits)
    return total


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def mean_bits(layers: Sequence[LayerInfo], config: TrialConfig) -> float:
    """Parameter-weighted mean weight bitwidth; layers without a bits knob count as 32."""
    weighted = count = 0
    for layer in layers:
        numel = _numel(layer.weight_shape)
        weighted += numel * config.bits.get(layer.name, 32)
        count += numel
    return weighted / count
