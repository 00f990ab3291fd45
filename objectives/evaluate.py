"""Apply a TrialConfig to a copy of a task's model and measure the chosen objectives.

A :class:`TrialEvaluator` holds one task's model and data for its whole life (a worker
builds one and keeps it), so a trial costs its own compression and measurement only.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from paretoml.objectives import deploy, device_lock, measure
from paretoml.objectives.device_lock import gpu_work
from paretoml.objectives.compress.merge import merge_state_dicts
from paretoml.objectives.compress.prune import prune_structured, prune_unstructured
from paretoml.objectives.compress.quantize import quantize_model
from paretoml.objectives.tasks.base import (
    CLASSIFIER_METRICS,
    Batch,
    Direction,
    How,
    ModelBundle,
    ObjectiveDef,
    Split,
    Task,
    TaskBundle,
    first_tensor,
)
from paretoml.objectives.tasks.classifier import classifier_bundle
from paretoml.objectives.train import FinetuneData, FinetuneSettings, Finetuner
from paretoml.search_space.constraints import mean_bits
from paretoml.search_space.introspect import LayerInfo, introspect, layer_weight
from paretoml.search_space.knobs import SPARSE_2_4, STRUCTURED
from paretoml.search_space.space import TrialConfig

#: What every task gets from the system itself, beside the task's own metrics.
SYSTEM_OBJECTIVES: dict[str, ObjectiveDef] = {
    o.name: o
    for o in (
        ObjectiveDef("latency_ms", "minimize", "measured",
                     "median forward time of the deployable model on this device"),
        ObjectiveDef("model_bytes", "minimize", "estimated",
                     "bytes of the packed format, counted from the compressed tensors", known_before_evaluation=True),
        ObjectiveDef("peak_memory_bytes", "minimize", "measured",
                     "parameters plus peak allocations of one forward pass"),
        ObjectiveDef("mean_bits", "minimize", "estimated", "parameter-weighted mean weight bitwidth",
                     known_before_evaluation=True),
    )
}
#: System objectives known from the config alone, so measurable at every rung.
KNOWN_BEFORE_EVALUATION = tuple(name for name, o in SYSTEM_OBJECTIVES.items() if o.known_before_evaluation)
#: The objectives of a classifier task (the digits tasks).
OBJECTIVES: dict[str, ObjectiveDef] = {**{m.name: m for m in CLASSIFIER_METRICS}, **SYSTEM_OBJECTIVES}


def objective_catalog(metrics: Sequence[ObjectiveDef]) -> dict[str, ObjectiveDef]:
    """The objectives a task offers: its own metrics, then the system's."""
    return {**{m.name: m for m in metrics}, **SYSTEM_OBJECTIVES}


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


Split_ = str  # "validation" | "calibration" | "test"

#: Called at each rung with the step and the objectives measurable there; True stops the trial.
RungGate = Callable[[int, dict[str, float]], bool]


class StoppedAtRung(Exception):
    """The trial was stopped at a rung (its pruner said so): ``step`` is the fine-tune step,
    or for rungs over evaluation size the validation samples scored there."""

    def __init__(self, step: int, unit: str = "fine-tune step") -> None:
        super().__init__(f"stopped at {unit} {step}")
        self.step = step


def prefix_sizes(fractions: Sequence[float], total: int) -> list[int]:
    """The samples of each evaluation rung: ``ceil(f * total)`` for each fraction, distinct,
    strictly between 0 and ``total`` (the full split is the trial's own last point)."""
    return sorted({n for f in fractions if 0 < (n := math.ceil(f * total)) < total})


class TrialEvaluator:
    """One task loaded on one device, ready to evaluate configs.

    ``data`` is the task in its general form (a :class:`ModelBundle`); ``bundle`` is the
    classifier form where the task gave one (it alone carries training data for fine-tuning
    and merge checkpoints).
    """

    def __init__(self, task: Task, settings: MeasureSettings, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device) if isinstance(device, str) else device
        self.settings = settings
        self.task = task
        loaded = task.load(self.device)
        self.bundle: TaskBundle | None = loaded if isinstance(loaded, TaskBundle) else None
        self.data: ModelBundle = classifier_bundle(loaded) if isinstance(loaded, TaskBundle) else loaded
        self.model: nn.Module = self.data.model
        self.catalog: dict[str, ObjectiveDef] = objective_catalog(self.data.scorer.metrics)
        self.layers: list[LayerInfo] = introspect(self.model, self.data.example, links=self.data.links)
        self._links = {layer.name: layer.link for layer in self.layers if layer.link is not None}
        with gpu_work(self.device):
            self._references: dict[str, Any] = {"validation": self.data.scorer.reference(self.model, self.data.validation)}
        self._samples: dict[str, int] = {}
        #: (split, n) -> the split's first n samples and the reference on them (evaluation rungs)
        self._prefixes: dict[tuple[str, int], tuple[Any, Any]] = {}
        weights = {id(layer_weight(self.model, l.name)) for l in self.layers}
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        #: fp32 parameters and buffers besides the knob-able weights (biases, norms)
        self.other_params = sum(t.numel() for t in tensors if id(t) not in weights and t.is_floating_point())

    @property
    def checkpoints(self) -> list[dict[str, torch.Tensor]]:
        """The state dicts merge knobs blend with the base: the classifier's or the task's."""
        return self.bundle.checkpoints if self.bundle is not None else self.data.checkpoints

    @property
    def n_checkpoints(self) -> int:
        return len(self.checkpoints)

    def finetune_data(self) -> FinetuneData | None:
        """What a trial's fine-tune trains on: the classifier's train split or the task's."""
        bundle = self.bundle
        if bundle is not None:
            if bundle.train_inputs is None or bundle.train_labels is None:
                return None
            return FinetuneData(bundle.train_inputs, bundle.train_labels)
        return self.data.finetune

    @property
    def primary_metric(self) -> str:
        """The task metric cheap passes (sensitivity) rank by: accuracy where there are labels."""
        if self.bundle is not None:
            return "accuracy" if self.bundle.val_labels is not None else "fidelity"
        return self.data.scorer.metrics[0].name

    @property
    def cheap_split(self) -> str:
        """The split cheap passes use: calibration where the task has one."""
        return "calibration" if self.data.calibration is not None else "validation"

    @torch.inference_mode()
    def example_output(self, model: nn.Module) -> torch.Tensor:
        """The main output tensor of ``model`` on the example inputs (a forward-only proxy)."""
        model.eval()
        if self.bundle is not None:
            return measure.predict(model, self.bundle.example_input)
        return first_tensor(self.data.example(model))

    def build(self, config: TrialConfig, seed: int = 0, number: int = -1, rungs: Sequence[int] = (),
              gate: RungGate | None = None, objectives: Sequence[str] = ()) -> tuple[nn.Module, dict[str, float]]:
        """The compressed copy of the model for ``config``, and how long each step took.

        With ``rungs`` and a ``gate``, fine-tuning pauses at each rung step, the objectives
        measurable there are scored on a quantized copy and handed to the gate, which may
        stop the trial (:class:`StoppedAtRung`)."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        self.task.on_trial(config, number)
        with gpu_work(self.device):  # beside other workers' GPU work, never beside a timing
            model = copy.deepcopy(self.model)
            if config.merge:
                if not self.checkpoints:
                    raise ValueError("merge knobs need a task with checkpoints")
                base = self.model.state_dict()
                model.load_state_dict(merge_state_dicts(base, self.checkpoints, config.merge, self.data.merge))
            structured = {n: r for n, r in config.prune.items() if config.prune_method.get(n) == STRUCTURED}
            unstructured = {n: r for n, r in config.prune.items()
                            if config.prune_method.get(n) not in (STRUCTURED, SPARSE_2_4)}
            prune_structured(model, structured, self._links)
            masks = prune_unstructured(model, unstructured)
            masks.update(deploy.prune_semi_structured(model, deploy.semi_structured_layers(config)))
            model = self.task.compress(model, config)
        timings["compress_s"] = time.perf_counter() - t0
        steps = self.settings.finetune_steps
        train = self.finetune_data() if steps > 0 else None
        if train is not None:
            t1 = time.perf_counter()
            tuner = Finetuner(
                model,
                train.inputs,
                train.labels,
                FinetuneSettings(
                    steps=steps,
                    batch_size=config.batch_size or self.settings.default_batch_size,
                    learning_rate=config.learning_rate or self.settings.default_learning_rate,
                    seed=seed,
                ),
                masks=masks,
                loss=train.loss,
            )
            for step in (sorted(s for s in rungs if 0 < s < steps) if gate is not None else []):
                with gpu_work(self.device):
                    tuner.run(step - tuner.done)
                    values = self.rung_values(model, config, objectives)
                if gate(step, values):  # the driver's answer is awaited outside the GPU lock
                    raise StoppedAtRung(step)
            with gpu_work(self.device):
                tuner.run(steps - tuner.done)
            timings["finetune_s"] = time.perf_counter() - t1
        t_quantize = time.perf_counter()
        with gpu_work(self.device):
            quantize_model(model, config.bits)
        timings["quantize_s"] = time.perf_counter() - t_quantize
        return model.eval(), timings

    def rung_values(self, model: nn.Module, config: TrialConfig, objectives: Sequence[str]) -> dict[str, float]:
        """The objectives measurable mid-fine-tuning: the task metrics of a quantized copy on
        the validation split, and those known from the config alone."""
        probe = copy.deepcopy(model)
        quantize_model(probe, config.bits)
        probe.eval()
        metrics = [n for n in objectives if n not in SYSTEM_OBJECTIVES]
        values = self.score(probe, metrics) if metrics else {}
        if "model_bytes" in objectives:
            values["model_bytes"] = float(measure.packed_model_bytes(probe, config.bits))
        if "mean_bits" in objectives:
            values["mean_bits"] = mean_bits(self.layers, config)
        return values

    def evaluate(self, config: TrialConfig, objectives: list[str], seed: int = 0, number: int = -1,
                 split: Split_ = "validation", rungs: Sequence[int] = (),
                 gate: RungGate | None = None, evaluation_rungs: Sequence[float] = ()) -> TrialResult:
        """Build and measure one config. ``rungs`` are fine-tune steps and
        ``evaluation_rungs`` fractions of the split where ``gate`` is asked whether to go on."""
        model, timings = self.build(config, seed, number, rungs, gate, objectives)
        result = self.measure(model, config, objectives, split, evaluation_rungs, gate)
        result.attrs["timings"].update(timings)
        return result

    def reference(self, objectives: list[str]) -> TrialResult:
        """The uncompressed model measured like a trial: the point every trial is compared to.

        Also warms up the process (allocator, kernels) so the first trial's latency is fair.
        """
        usable = [o for o in objectives if o != "accuracy" or self.bundle is None or self.bundle.val_labels is not None]
        return self.measure(self.model, TrialConfig(), usable)

    def _split(self, name: Split_) -> tuple[Any, Any]:
        split = {"calibration": self.data.calibration, "test": self.data.test}.get(name, self.data.validation)
        if split is None:
            split, name = self.data.validation, "validation"
        if name not in self._references:
            with gpu_work(self.device):
                self._references[name] = self.data.scorer.reference(self.model, split)
        return split, self._references[name]

    def score(self, model: nn.Module, names: list[str], split: Split_ = "validation") -> dict[str, float]:
        """The task's own metrics of ``model`` on a split, against the uncompressed model's
        reference (e.g. an exported model reloaded: the same numbers as its trial)."""
        data, reference = self._split(split)
        with gpu_work(self.device):
            scored = self.data.scorer.score(model, self._yielding(data), reference, names)
        return {name: float(value) for name, value in scored.items()}

    def _yielding(self, split: Split) -> Split:
        """``split`` with a pause before each batch where another worker's queued latency
        timing may take the GPU (:func:`device_lock.let_timings_in`): it waits for one batch
        of this scoring, not the whole split."""
        device = self.device

        def batches() -> Iterator[Batch]:
            for batch in split:
                device_lock.let_timings_in(device)
                yield batch

        return Split(batches, size=split.size, description=split.description)

    def split_samples(self, split: Split_ = "validation") -> int:
        """The samples of a split (counted once where the split does not say)."""
        if split not in self._samples:
            self._samples[split] = self._split(split)[0].count()
        return self._samples[split]

    def _prefix(self, split: Split_, n: int) -> tuple[Any, Any]:
        """``n`` samples of a split, spread over all its batches (:meth:`Split.spread`), and
        the uncompressed model's reference on them (computed once per worker): a rung is
        scored against a reference cut to match."""
        if (split, n) not in self._prefixes:
            prefix = self._split(split)[0].spread(n)
            with gpu_work(self.device):
                self._prefixes[split, n] = (prefix, self.data.scorer.reference(self.model, prefix))
        return self._prefixes[split, n]

    def prepare_prefixes(self, fractions: Sequence[float], split: Split_ = "validation") -> None:
        """Score the uncompressed model on the prefixes now, so no trial pays for it."""
        for n in prefix_sizes(fractions, self.split_samples(split)):
            self._prefix(split, n)

    def evaluation_rungs(self, run: nn.Module, model: nn.Module, config: TrialConfig, objectives: Sequence[str],
                         fractions: Sequence[float], gate: RungGate, split: Split_ = "validation") -> None:
        """Score the deployable model ``run`` on growing prefixes of the split and ask
        ``gate`` at each (step = samples scored); raise :class:`StoppedAtRung` when it says
        stop. Packed bytes are counted on the compressed ``model``, as for the full trial."""
        metrics = [n for n in objectives if n not in SYSTEM_OBJECTIVES]
        for n in prefix_sizes(fractions, self.split_samples(split)):
            data, reference = self._prefix(split, n)
            with gpu_work(self.device):
                scored = self.data.scorer.score(run, self._yielding(data), reference, metrics) if metrics else {}
            values = {name: float(scored[name]) for name in metrics}
            if "model_bytes" in objectives:
                values["model_bytes"] = float(self._packed_bytes(model, config))
            if "mean_bits" in objectives:
                values["mean_bits"] = mean_bits(self.layers, config)
            if gate(n, values):
                raise StoppedAtRung(n, "validation sample")

    def measure(self, model: nn.Module, config: TrialConfig, objectives: list[str],
                split: Split_ = "validation", evaluation_rungs: Sequence[float] = (),
                gate: RungGate | None = None) -> TrialResult:
        unknown = [name for name in objectives if name not in self.catalog]
        if unknown:
            raise KeyError(f"unknown objective {unknown[0]!r}; available: {', '.join(self.catalog)}")
        # Everything but the packed size is measured on the deployable form of the model:
        # the real low-bit and sparse kernels of this device (objectives/deploy).
        example = measure.example_inputs(self._latency_example(), self.settings.latency.batch_size)
        timings: dict[str, float] = {}
        t_deploy = time.perf_counter()
        with gpu_work(self.device):  # kernel-table timings inside take the device alone
            deployment = deploy.deployable(model, config, self.device, example=example)
        timings["deploy_s"] = time.perf_counter() - t_deploy
        run = deployment.model
        values: dict[str, float] = {}
        provenance: dict[str, dict[str, str]] = {}
        lat = self.settings.latency
        data, split_data = self.data, self._split(split)
        size = f"{split_data[0].size} " if split_data[0].size is not None else ""
        detail = {
            "latency_ms": (
                f"median of {lat.repeats} passes after {lat.warmup} warm-up, batch {self._latency_batch()}, "
                + ("CUDA events, no other worker's GPU work meanwhile (timing lock)"
                   if self.device.type == "cuda" and device_lock.enabled() else
                   "CUDA events, beside other workers' GPU work (timing lock off)" if self.device.type == "cuda"
                   else f"{lat.threads} thread(s)") + f"; {deployment.describe()}"
            ),
            "model_bytes": "packed format: b-bit values + fp16 per-channel scales, bitmap for sparsity, fp32 rest",
            "peak_memory_bytes": (
                "CUDA allocator high-water mark" if self.device.type == "cuda"
                else "PyTorch profiler allocation trace of one forward pass (CPU)"
            ),
            "mean_bits": "from the config's bitwidths, weighted by parameter count",
        }
        t0 = time.perf_counter()
        if evaluation_rungs and gate is not None:
            self.evaluation_rungs(run, model, config, objectives, evaluation_rungs, gate, split)
        task_metrics = [name for name in objectives if name not in SYSTEM_OBJECTIVES]
        scored: dict[str, float] = {}
        if task_metrics:
            # a real model's task scores all its metrics from one pass (e.g. one set of
            # embeddings); those the study does not optimise are kept as attributes
            wanted = task_metrics if self.bundle is not None else [m.name for m in data.scorer.metrics]
            t_score = time.perf_counter()
            scored = self.score(run, wanted, split)
            timings["score_s"] = time.perf_counter() - t_score
            for name in task_metrics:
                values[name] = float(scored[name])
                detail[name] = f"{self.catalog[name].summary}; {size}{split} samples"
        for name in objectives:
            if name == "latency_ms":
                t_latency = time.perf_counter()
                values[name] = measure.latency_ms(run, example, lat)
                timings["latency_s"] = time.perf_counter() - t_latency
            elif name == "model_bytes":
                values[name] = float(self._packed_bytes(model, config))
            elif name == "peak_memory_bytes":
                with gpu_work(self.device):
                    values[name] = float(measure.peak_memory_bytes(run, self._latency_example()))
            elif name == "mean_bits":
                values[name] = mean_bits(self.layers, config)
            how = self.catalog[name].how
            if name == "latency_ms" and not deployment.all_native:
                how = "estimated"  # some layer ran a stand-in kernel, not one of its own format
            provenance[name] = {"how": how, "detail": detail[name]}
            provenance[name].update(data.scorer.last_provenance.get(name, {}) if name in scored else {})
        attrs: dict[str, Any] = {"timings": {"measure_s": time.perf_counter() - t0, **timings},
                                 "kernels": deploy.kernel_summary(deployment.layers)}
        if evaluation_rungs and gate is not None:
            attrs["validation_samples"] = self.split_samples(split)
        if self.bundle is None and scored:
            attrs["metrics"] = {name: float(value) for name, value in scored.items()}
        bundle = self.bundle
        if bundle is not None and bundle.test_inputs is not None and bundle.test_labels is not None:
            with gpu_work(self.device):
                attrs["test_accuracy"] = measure.accuracy(run, bundle.test_inputs, bundle.test_labels)
        if "model_bytes" not in values:
            attrs["model_bytes"] = self._packed_bytes(model, config)
        return TrialResult(values, provenance, attrs)

    def _packed_bytes(self, model: nn.Module, config: TrialConfig) -> int:
        """Packed bytes of ``model``: counting its zeros runs on its device, as GPU work."""
        with gpu_work(self.device):
            return measure.packed_model_bytes(model, config.bits)

    def _latency_example(self) -> Any:
        """A classifier's example tensor (cut to the latency batch), or the task's inputs."""
        return self.bundle.example_input if self.bundle is not None else self.data.example

    def _latency_batch(self) -> int:
        if self.bundle is not None:
            return min(self.settings.latency.batch_size, len(self.bundle.example_input))
        return self.data.example.batch_size
