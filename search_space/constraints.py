"""Budgets as Optuna constraint values: ``value <= 0`` means feasible.

Size budgets are computed from the config and the introspected layers before a trial is
evaluated (an upper bound, so a trial stopped early is never taken for feasible), and once
it has run from the bytes it measured, with the one formula of
:mod:`paretoml.search_space.model_bytes`: the budget and the ``model_bytes`` objective agree.
A latency budget can only be known once the deployable model has run: its value comes from
the trial's measured ``latency_ms`` (see :func:`needs_measurement`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from paretoml.search_space.deploy_mode import DEFAULT_DEPLOY, DEQUANTIZE_AT_LOAD, DeployMode
from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.model_bytes import estimate_model_bytes, mean_bits
from paretoml.search_space.space import TrialConfig

__all__ = ["AnyBudget", "Constraint", "LatencyBudget", "MeanBitsBudget", "ModelBytesBudget", "constraint_keys",
           "constraint_values", "estimate_model_bytes", "mean_bits", "needs_measurement"]


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


def needs_measurement(constraints: Sequence[AnyBudget], deploy: DeployMode = DEFAULT_DEPLOY) -> list[str]:
    """Objectives a trial must measure for its constraint values (beyond the study's own).

    A size budget is known from the config only where ``model_bytes`` is the packed file
    (``dequantize-at-load``); in runtime mode it is the deployed model's resident bytes,
    which the kernels' layouts decide, so the budget is checked on the measured number."""
    needed = ["latency_ms"] if any(isinstance(c, LatencyBudget) for c in constraints) else []
    if deploy.mode != DEQUANTIZE_AT_LOAD and any(isinstance(c, ModelBytesBudget) for c in constraints):
        needed.append("model_bytes")
    return needed


def constraint_keys(constraints: Sequence[AnyBudget]) -> list[str]:
    """The name each constraint's value is stored under (Optuna's ``Trial.set_constraint``
    key), in the order of :func:`constraint_values`: the budget's kind (``model_bytes``), with
    ``_2``, ``_3`` ... for a kind given again."""
    seen: dict[str, int] = {}
    keys = []
    for constraint in constraints:
        seen[constraint.kind] = seen.get(constraint.kind, 0) + 1
        keys.append(constraint.kind if seen[constraint.kind] == 1 else f"{constraint.kind}_{seen[constraint.kind]}")
    return keys


def constraint_values(
    constraints: Sequence[AnyBudget],
    layers: Sequence[LayerInfo],
    config: TrialConfig,
    other_params: int,
    measured: Mapping[str, float] | None = None,
) -> list[float]:
    """One value per constraint; a latency budget needs ``measured["latency_ms"]``. A size
    budget takes ``measured["model_bytes"]`` when given (the trial's own bytes), else the
    estimate from the config."""
    values: list[float] = []
    for constraint in constraints:
        if isinstance(constraint, ModelBytesBudget):
            size = (measured["model_bytes"] if measured is not None and "model_bytes" in measured
                    else estimate_model_bytes(layers, config, other_params))
            values.append(float(size) - constraint.max_bytes)
        elif isinstance(constraint, LatencyBudget):
            if measured is None or "latency_ms" not in measured:
                raise ValueError("a latency_ms budget needs the trial's measured latency")
            values.append(float(measured["latency_ms"]) - constraint.max_ms)
        else:
            values.append(mean_bits(layers, config) - constraint.max_bits)
    return values
