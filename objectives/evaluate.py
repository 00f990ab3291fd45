"""Apply a TrialConfig to a copy of a task's model and measure the chosen objectives.

A :class:`TrialEvaluator` holds one task's model and data for its whole life (a worker
builds one and keeps it), so a trial costs its own compression and measurement only.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from paretoml.objectives import deploy, measure
from paretoml.objectives.compress.merge import merge_state_dicts
from paretoml.objectives.compress.prune import prune_structured, prune_unstructured
from paretoml.objectives.compress.quantize import quantize_model
from paretoml.objectives.tasks.base import Task, TaskBundle
from paretoml.objectives.train import FinetuneSettings, finetune
from paretoml.search_space.constraints import mean_bits
from paretoml.search_space.introspect import LayerInfo, introspect
from paretoml.search_space.space import TrialConfig

Direction = Literal["minimize", "maximize"]
How = Literal["measured", "estimated"]


@dataclass(frozen=True)
class ObjectiveDef:
    name: str
    direction: Direction
    how: How
    summary: str


OBJECTIVES: dict[str, ObjectiveDef] = {
    o.name: o
    for o in (
        ObjectiveDef("accuracy", "maximize", "measured", "top-1 accuracy on the task's validation split"),
        ObjectiveDef("fidelity", "maximize", "measured", "top-1 agreement with the uncompressed model"),
        ObjectiveDef("latency_ms", "minimize", "measured",
                     "median forward time of the deployable model on this device"),
        ObjectiveDef("model_bytes", "minimize", "estimated",
                     "bytes of the packed format, counted from the compressed tensors"),
        ObjectiveDef("peak_memory_bytes", "minimize", "measured",
                     "parameters plus peak allocations of one forward pass"),
        ObjectiveDef("mean_bits", "minimize", "estimated", "parameter-weighted mean weight bitwidth"),
    )
}


@dataclass(frozen=True)
class MeasureSettings:
    latency: measure.LatencySettings = field(default_factory=measure.LatencySettings)
    finetune_steps: int = 0
    default_batch_size: int = 32
    default_learning_rate: float = 1e-3


@dataclass(frozen=True)
class TrialResult:
    values: dict[str, float]
    #: objective -> {"how": measured|estimated, "detail": ...}
    provenance: dict[str, dict[str, str]]
    attrs: dict[str, Any]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)


class TrialEvaluator:
    """One task loaded on one device, ready to evaluate configs."""

    def __init__(self, task: Task, settings: MeasureSettings, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device) if isinstance(device, str) else device
        self.settings = settings
        self.task = task
        self.bundle: TaskBundle = task.load(self.device)
        self.layers: list[LayerInfo] = introspect(self.bundle.model, self.bundle.example_input)
        self._links = {layer.name: layer.link for layer in self.layers if layer.link is not None}
        self._reference_logits = measure.predict(self.bundle.model, self.bundle.val_inputs)
        weights = {id(getattr(self.bundle.model.get_submodule(l.name), "weight")) for l in self.layers}
        tensors = list(self.bundle.model.parameters()) + list(self.bundle.model.buffers())
        #: fp32 parameters and buffers besides the knob-able weights (biases, norms)
        self.other_params = sum(t.numel() for t in tensors if id(t) not in weights and t.is_floating_point())

    @property
    def n_checkpoints(self) -> int:
        return len(self.bundle.checkpoints)

    def build(self, config: TrialConfig, seed: int = 0, number: int = -1) -> tuple[nn.Module, dict[str, float]]:
        """The compressed copy of the model for ``config``, and how long each step took."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        self.task.on_trial(config, number)
        model = copy.deepcopy(self.bundle.model)
        if config.merge:
            base = self.bundle.model.state_dict()
            model.load_state_dict(merge_state_dicts(base, self.bundle.checkpoints, config.merge))
        structured = {n: r for n, r in config.prune.items() if config.prune_method.get(n) == "structured"}
        unstructured = {n: r for n, r in config.prune.items()
                        if config.prune_method.get(n) not in ("structured", "2:4")}
        prune_structured(model, structured, self._links)
        masks = prune_unstructured(model, unstructured)
        masks.update(deploy.prune_semi_structured(model, deploy.semi_structured_layers(config)))
        timings["compress_s"] = time.perf_counter() - t0
        steps = self.settings.finetune_steps
        if steps > 0 and self.bundle.train_inputs is not None and self.bundle.train_labels is not None:
            t1 = time.perf_counter()
            finetune(
                model,
                self.bundle.train_inputs,
                self.bundle.train_labels,
                FinetuneSettings(
                    steps=steps,
                    batch_size=config.batch_size or self.settings.default_batch_size,
                    learning_rate=config.learning_rate or self.settings.default_learning_rate,
                    seed=seed,
                ),
                masks=masks,
            )
            timings["finetune_s"] = time.perf_counter() - t1
        quantize_model(model, config.bits)
        return model.eval(), timings

    def evaluate(self, config: TrialConfig, objectives: list[str], seed: int = 0, number: int = -1) -> TrialResult:
        model, timings = self.build(config, seed, number)
        result = self.measure(model, config, objectives)
        result.attrs["timings"].update(timings)
        return result

    def reference(self, objectives: list[str]) -> TrialResult:
        """The uncompressed model measured like a trial: the point every trial is compared to.

        Also warms up the process (allocator, kernels) so the first trial's latency is fair.
        """
        usable = [o for o in objectives if o != "accuracy" or self.bundle.val_labels is not None]
        return self.measure(self.bundle.model, TrialConfig(), usable)

    def measure(self, model: nn.Module, config: TrialConfig, objectives: list[str]) -> TrialResult:
        bundle = self.bundle
        # Everything but the packed size is measured on the deployable form of the model:
        # the real low-bit and sparse kernels of this device (objectives/deploy).
        deployment = deploy.deployable(model, config, self.device,
                                       example=bundle.example_input[: self.settings.latency.batch_size])
        run = deployment.model
        values: dict[str, float] = {}
        provenance: dict[str, dict[str, str]] = {}
        lat = self.settings.latency
        detail = {
            "accuracy": f"{len(bundle.val_inputs)} validation samples",
            "fidelity": f"{len(bundle.val_inputs)} validation samples vs the uncompressed model",
            "latency_ms": (
                f"median of {lat.repeats} passes after {lat.warmup} warm-up, batch {lat.batch_size}, "
                f"{lat.threads} thread(s); {deployment.describe()}"
            ),
            "model_bytes": "packed format: b-bit values + fp16 per-channel scales, bitmap for sparsity, fp32 rest",
            "peak_memory_bytes": (
                "CUDA allocator high-water mark" if self.device.type == "cuda"
                else "PyTorch profiler allocation trace of one forward pass (CPU)"
            ),
            "mean_bits": "from the config's bitwidths, weighted by parameter count",
        }
        t0 = time.perf_counter()
        for name in objectives:
            if name == "accuracy":
                if bundle.val_labels is None:
                    raise ValueError("objective 'accuracy' needs labels; this task has none, use 'fidelity'")
                values[name] = measure.accuracy(run, bundle.val_inputs, bundle.val_labels)
            elif name == "fidelity":
                values[name] = measure.fidelity(run, bundle.val_inputs, self._reference_logits)
            elif name == "latency_ms":
                values[name] = measure.latency_ms(run, bundle.example_input, lat)
            elif name == "model_bytes":
                values[name] = float(measure.packed_model_bytes(model, config.bits))
            elif name == "peak_memory_bytes":
                values[name] = float(measure.peak_memory_bytes(run, bundle.example_input))
            elif name == "mean_bits":
                values[name] = mean_bits(self.layers, config)
            else:
                raise KeyError(f"unknown objective {name!r}; available: {', '.join(OBJECTIVES)}")
            how = OBJECTIVES[name].how
            if name == "latency_ms" and not deployment.all_native:
                how = "estimated"  # some layer ran a stand-in kernel, not one of its own format
            provenance[name] = {"how": how, "detail": detail[name]}
        attrs: dict[str, Any] = {"timings": {"measure_s": time.perf_counter() - t0},
                                 "kernels": deploy.kernel_summary(deployment.layers)}
        if bundle.test_inputs is not None and bundle.test_labels is not None:
            attrs["test_accuracy"] = measure.accuracy(run, bundle.test_inputs, bundle.test_labels)
        if "model_bytes" not in values:
            attrs["model_bytes"] = measure.packed_model_bytes(model, config.bits)
        return TrialResult(values, provenance, attrs)
