"""What the system obtains of every trial beside the task's own metrics, as one table:
objective -> (the function that obtains it, how it is obtained, the detail text).

Each entry's parts are small functions of a :class:`MeasureContext` (the trial's compressed
model, its config and, once built, its deployment), so another objective, or another way of
obtaining one (e.g. per deployment mode), is a change to one entry, not a branch in the
evaluator. "How" uses the provenance vocabulary of :data:`~paretoml.objectives.tasks.base.How`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from paretoml.objectives import device_lock, measure
from paretoml.objectives.deploy import Deployment, deployable, trial_model_bytes
from paretoml.objectives.device_lock import gpu_work
from paretoml.objectives.tasks.base import ExampleInputs, How, ObjectiveDef
from paretoml.search_space.deploy_mode import DEFAULT_DEPLOY, DEQUANTIZE_AT_LOAD, DeployMode
from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.model_bytes import mean_bits
from paretoml.search_space.space import TrialConfig

__all__ = ["KNOWN_BEFORE_EVALUATION", "SYSTEM_OBJECTIVES", "TABLE", "MeasureContext", "SystemObjective",
           "known_values"]


@dataclass(frozen=True)
class MeasureContext:
    """What the table's functions read of one trial.

    Args:
        model: the compressed model (fake-quantized weights, pruned zeros): bytes are counted on it.
        config: the trial's config.
        layers: the knob-able layers (mean bits weighs by their sizes).
        device: where the trial runs; GPU steps hold the device's shared lock.
        deployment: the deployable model (real kernels); None where only the objectives known
            before evaluation are asked for (the rungs).
        example: the inputs latency is timed on (cut to the latency batch where the task allows).
        memory_example: the inputs peak memory is measured on (the task's example).
        latency: the latency settings.
        deploy: the study's deployment mode: which model is measured, which bytes are counted.
    """

    model: nn.Module
    config: TrialConfig
    layers: Sequence[LayerInfo]
    device: torch.device
    deployment: Deployment | None = None
    example: ExampleInputs | None = None
    memory_example: ExampleInputs | None = None
    latency: measure.LatencySettings = field(default_factory=measure.LatencySettings)
    deploy: DeployMode = DEFAULT_DEPLOY

    @property
    def deployed(self) -> Deployment:
        """The deployment, which every objective not known before evaluation needs."""
        if self.deployment is None:
            raise ValueError("this objective is measured on the deployable model; none was built")
        return self.deployment

    @property
    def latency_example(self) -> ExampleInputs:
        if self.example is None:
            raise ValueError("latency needs the example inputs it is timed on")
        return self.example


@dataclass(frozen=True)
class SystemObjective:
    """One row of the table.

    Args:
        definition: name, direction, how it is obtained as a rule, catalog summary, and
            whether it is known before evaluation (from the config and compressed tensors).
        obtain: the trial's value.
        detail: the provenance detail text.
        how: how this trial's value was obtained; None: the definition's ``how``.
        timing: key of the trial's timings its seconds are recorded under; None: not recorded.
    """

    definition: ObjectiveDef
    obtain: Callable[[MeasureContext], float]
    detail: Callable[[MeasureContext], str]
    how: Callable[[MeasureContext], How] | None = None
    timing: str | None = None

    def provenance(self, ctx: MeasureContext) -> dict[str, str]:
        how = self.how(ctx) if self.how is not None else self.definition.how
        return {"how": how, "detail": self.detail(ctx)}


def _latency(ctx: MeasureContext) -> float:
    return measure.latency_ms(ctx.deployed.model, ctx.latency_example, ctx.latency)


def _latency_detail(ctx: MeasureContext) -> str:
    lat = ctx.latency
    if ctx.device.type != "cuda":
        how = f"{lat.threads} thread(s)"
    elif device_lock.enabled():
        how = "CUDA events, no other worker's GPU work meanwhile (timing lock)"
    else:
        how = "CUDA events, beside other workers' GPU work (timing lock off)"
    return (f"median of {lat.repeats} passes after {lat.warmup} warm-up, batch {ctx.latency_example.batch_size}, "
            f"{how}; {ctx.deployed.describe()}")


def _latency_how(ctx: MeasureContext) -> How:
    # a layer that ran a stand-in kernel, not one of its own format, makes the time an estimate
    return "measured" if ctx.deployed.all_native else "estimated"


def _model_bytes(ctx: MeasureContext) -> float:
    """The bytes of what the trial deploys (:func:`trial_model_bytes`): the deployed model's
    resident bytes, or in dequantize-at-load mode its packed file's. At a rung (no deployment
    yet) the model is deployed here, without the kernel table's timings."""
    with gpu_work(ctx.device):
        deployment = ctx.deployment or deployable(ctx.model, ctx.config, ctx.device, deploy=ctx.deploy)
        return float(trial_model_bytes(deployment, ctx.model, ctx.config))


def _model_bytes_detail(ctx: MeasureContext) -> str:
    if ctx.deploy.mode == DEQUANTIZE_AT_LOAD:
        return ("exported file's weight bytes (less its header): b-bit values + fp16 row scales, bitmap for "
                "sparsity, rest as stored; expanded to the float type at load, where latency and memory are measured")
    what = "emulated layers in the kernel that ran them" if ctx.deploy.emulate else "every layer in its own format"
    return (f"resident bytes of the deployed model's parameters and buffers on {ctx.device.type} ({what}); "
            "its export's file less the header")


def _peak_memory(ctx: MeasureContext) -> float:
    if ctx.memory_example is None:
        raise ValueError("peak memory needs the example inputs it is measured on")
    with gpu_work(ctx.device):
        return float(measure.peak_memory_bytes(ctx.deployed.model, ctx.memory_example))


def _peak_memory_detail(ctx: MeasureContext) -> str:
    if ctx.device.type == "cuda":
        return "CUDA allocator high-water mark"
    return "PyTorch profiler allocation trace of one forward pass (CPU)"


def _mean_bits(ctx: MeasureContext) -> float:
    return mean_bits(ctx.layers, ctx.config)


def _text(text: str) -> Callable[[MeasureContext], str]:
    return lambda ctx: text


#: The system's objectives, in the order of the catalog.
TABLE: dict[str, SystemObjective] = {
    entry.definition.name: entry
    for entry in (
        SystemObjective(
            ObjectiveDef("latency_ms", "minimize", "measured",
                         "median forward time of the deployable model on this device"),
            _latency, _latency_detail, how=_latency_how, timing="latency_s"),
        SystemObjective(
            ObjectiveDef("model_bytes", "minimize", "measured",
                         "bytes of what the trial deploys: the deployed model's parameters and buffers "
                         "(runtime) or its packed file (dequantize-at-load), to the byte its export",
                         known_before_evaluation=True),
            _model_bytes, _model_bytes_detail),
        SystemObjective(
            ObjectiveDef("peak_memory_bytes", "minimize", "measured",
                         "parameters plus peak allocations of one forward pass"),
            _peak_memory, _peak_memory_detail),
        SystemObjective(
            ObjectiveDef("mean_bits", "minimize", "estimated", "parameter-weighted mean weight bitwidth",
                         known_before_evaluation=True),
            _mean_bits, _text("from the config's bitwidths, weighted by parameter count")),
    )
}
#: What every task gets from the system itself, beside the task's own metrics.
SYSTEM_OBJECTIVES: dict[str, ObjectiveDef] = {name: entry.definition for name, entry in TABLE.items()}
#: System objectives known from the config alone, so measurable at every rung.
KNOWN_BEFORE_EVALUATION = tuple(name for name, o in SYSTEM_OBJECTIVES.items() if o.known_before_evaluation)


def known_values(ctx: MeasureContext, names: Sequence[str]) -> dict[str, float]:
    """The objectives among ``names`` known before evaluation: the same at every rung and in
    the full trial, so the rungs and the trial obtain them here alike."""
    return {name: TABLE[name].obtain(ctx) for name in KNOWN_BEFORE_EVALUATION if name in names}
