"""Budgets as Optuna constraint values: ``value <= 0`` means feasible.

Size budgets are computed from the config and the introspected layers before a trial is
evaluated, so a sampler learns feasibility without paying for a measurement. The byte
formula is the one :mod:`paretoml.objectives.measure` applies to real tensors. A latency
budget can only be known once the deployable model has run: its value comes from the
trial's measured ``latency_ms`` (see :func:`needs_measurement`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from paretoml.objectives.compress.prune import channels_to_remove
from paretoml.objectives.measure import packed_weight_bytes
from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.space import TrialConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelBytesBudget(_Strict):
    kind: Literal["model_bytes"] = "model_bytes"
    max_bytes: int = Field(gt=0)


class MeanBitsBudget(_Strict):
    kind: Literal["mean_bits"] = "mean_bits"
    max_bits: float = Field(gt=0, le=32)


class LatencyBudget(_Strict):
    """Latency of the deployable model (``latency_ms`` as measured for the trial)."""

    kind: Literal["latency_ms"] = "latency_ms"
    max_ms: float = Field(gt=0)


Constraint = Annotated[Union[ModelBytesBudget, MeanBitsBudget, LatencyBudget], Field(discriminator="kind")]
AnyBudget = Union[ModelBytesBudget, MeanBitsBudget, LatencyBudget]


def needs_measurement(constraints: Sequence[AnyBudget]) -> list[str]:
    """Objectives a trial must measure for its constraint values (beyond the study's own)."""
    return ["latency_ms"] if any(isinstance(c, LatencyBudget) for c in constraints) else []


def estimate_model_bytes(layers: Sequence[LayerInfo], config: TrialConfig, other_params: int) -> int:
    """Packed bytes predicted from bitwidths and pruning ratios.

    ``other_params`` counts the fp32 parameters and buffers outside the layers' weights
    (biases, norms). Structured pruning removes rows here, the matching inputs of the
    consuming layer, and the bias and norm entries of the removed channels.
    """
    removed_rows: dict[str, int] = {}
    removed_inputs: dict[str, int] = {}
    other_bytes = 4 * other_params
    for layer in layers:
        if config.prune_method.get(layer.name) != "structured" or layer.link is None:
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
        if config.prune_method.get(layer.name) == "structured":
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


def constraint_values(
    constraints: Sequence[AnyBudget],
    layers: Sequence[LayerInfo],
    config: TrialConfig,
    other_params: int,
    measured: Mapping[str, float] | None = None,
) -> list[float]:
    """One value per constraint; a latency budget needs ``measured["latency_ms"]``."""
    values: list[float] = []
    for constraint in constraints:
        if isinstance(constraint, ModelBytesBudget):
            values.append(float(estimate_model_bytes(layers, config, other_params) - constraint.max_bytes))
        elif isinstance(constraint, LatencyBudget):
            if measured is None or "latency_ms" not in measured:
                raise ValueError("a latency_ms budget needs the trial's measured latency")
            values.append(float(measured["latency_ms"]) - constraint.max_ms)
        else:
            values.append(mean_bits(layers, config) - constraint.max_bits)
    return values
