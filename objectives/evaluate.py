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
from paretoml.objectives.system_objectives import (
    KNOWN_BEFORE_EVALUATION,
    SYSTEM_OBJECTIVES,
    TABLE,
    MeasureContext,
    known_values,
)
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
from paretoml.objectives.tasks.classifier import as_model_bundle
from paretoml.objectives.train import FinetuneSettings, Finetuner
from paretoml.search_space.deploy_mode import DEFAULT_DEPLOY, DeployMode
from paretoml.search_space.introspect import LayerInfo, introspect, layer_weight
from paretoml.search_space.knobs import SPARSE_2_4, STRUCTURED
from paretoml.search_space.space import TrialConfig

__all__ = ["KNOWN_BEFORE_EVALUATION", "OBJECTIVES", "SYSTEM_OBJECTIVES", "Direction", "How", "MeasureSettings",
           "RungGate", "StoppedAtRung", "TrialEvaluator", "TrialResult", "objective_catalog", "prefix_sizes",
           "resolve_device"]

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
    #: which model a trial is measured on and which bytes model_bytes counts
    deploy: DeployMode = DEFAULT_DEPLOY


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

    ``data`` is the task in the one form the evaluator sees (a :class:`ModelBundle`; a
    classifier's :class:`TaskBundle` is adapted once, here). ``bundle`` keeps a classifier's
    tensors for callers that read them (tests, benchmarks); the evaluator itself does not.

    Args:
        task: the task to load.
        settings: how trials are measured (latency passes, fine-tune steps).
        device: where the model runs.
    """

    def __init__(self, task: Task, settings: MeasureSettings, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device) if isinstance(device, str) else device
        self.settings = settings
        self.task = task
        loaded = task.load(self.device)
        self.bundle: TaskBundle | None = loaded if isinstance(loaded, TaskBundle) else None
        self.data: ModelBundle = as_model_bundle(loaded)
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
    def n_checkpoints(self) -> int:
        return len(self.data.checkpoints)

    @property
    def primary_metric(self) -> str:
        """The task metric cheap passes (sensitivity) rank by: accuracy where there are labels."""
        return self.data.scorer.scorable()[0]

    @property
    def cheap_split(self) -> str:
        """The split cheap passes use: calibration where the task has one."""
        return "calibration" if self.data.calibration is not None else "validation"

    @torch.inference_mode()
    def example_output(self, model: nn.Module) -> torch.Tensor:
        """The main output tensor of ``model`` on the example inputs (a forward-only proxy)."""
        model.eval()
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
            model, masks = self._compress(config)
        timings["compress_s"] = time.perf_counter() - t0
        if self.settings.finetune_steps > 0 and self.data.finetune is not None:
            t1 = time.perf_counter()
            self._finetune(model, masks, config, seed, rungs, gate, objectives)
            timings["finetune_s"] = time.perf_counter() - t1
        t_quantize = time.perf_counter()
        with gpu_work(self.device):
            quantize_model(model, config.bits)
        timings["quantize_s"] = time.perf_counter() - t_quantize
        return model.eval(), timings

    def _compress(self, config: TrialConfig) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        """A copy of the model merged and pruned as ``config`` says, and its pruning masks
        (which fine-tuning keeps)."""
        model = copy.deepcopy(self.model)
        if config.merge:
            if not self.data.checkpoints:
                raise ValueError("merge knobs need a task with checkpoints")
            base = self.model.state_dict()
            model.load_state_dict(merge_state_dicts(base, self.data.checkpoints, config.merge, self.data.merge))
        structured = {n: r for n, r in config.prune.items() if config.prune_method.get(n) == STRUCTURED}
        unstructured = {n: r for n, r in config.prune.items()
                        if config.prune_method.get(n) not in (STRUCTURED, SPARSE_2_4)}
        prune_structured(model, structured, self._links,  # kept rows fit the layers' kernels
                         deploy.prune_multiples(model, config, self._links, self.device, self.settings.deploy))
        masks = prune_unstructured(model, unstructured)
        masks.update(deploy.prune_semi_structured(model, deploy.semi_structured_layers(config)))
        return self.task.compress(model, config), masks

    def _finetune(self, model: nn.Module, masks: dict[str, torch.Tensor], config: TrialConfig, seed: int,
                  rungs: Sequence[int], gate: RungGate | None, objectives: Sequence[str]) -> None:
        """Fine-tune ``model`` on the task's training data, asking ``gate`` at each rung."""
        train = self.data.finetune
        assert train is not None
        steps = self.settings.finetune_steps
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

    def layer_bytes(self, config: TrialConfig, layers: Sequence[str]) -> dict[str, int]:
        """Each of ``layers``' bytes in ``model_bytes`` for ``config``, deployed as the trial
        would be (its mode's kernels or packed file). Counted without fine-tuning, which keeps
        every shape and format (in dequantize-at-load mode the zeros it moves may shift a
        bitmap-stored layer by a few bytes)."""
        with gpu_work(self.device):
            model, _ = self._compress(config)
            quantize_model(model, config.bits)
            deployment = deploy.deployable(model, config, self.device, deploy=self.settings.deploy)
            return deploy.trial_layer_bytes(deployment, model, config, layers)

    def rung_values(self, model: nn.Module, config: TrialConfig, objectives: Sequence[str]) -> dict[str, float]:
        """The objectives measurable mid-fine-tuning: the task metrics of a quantized copy on
        the validation split, and those known before evaluation."""
        probe = copy.deepcopy(model)
        quantize_model(probe, config.bits)
        probe.eval()
        metrics = [n for n in objectives if n not in SYSTEM_OBJECTIVES]
        values = self.score(probe, metrics) if metrics else {}
        values.update(known_values(self._context(probe, config), objectives))
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
        Metrics the task's data cannot give (accuracy without labels) are left out.
        """
        scorer = self.data.scorer
        unscorable = {m.name for m in scorer.metrics} - set(scorer.scorable())
        return self.measure(self.model, TrialConfig(), [o for o in objectives if o not in unscorable])

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
            values.update(known_values(self._context(model, config), objectives))
            if gate(n, values):
                raise StoppedAtRung(n, "validation sample")

    def measure(self, model: nn.Module, config: TrialConfig, objectives: list[str],
                split: Split_ = "validation", evaluation_rungs: Sequence[float] = (),
                gate: RungGate | None = None) -> TrialResult:
        """Deploy ``model`` (the real low-bit and sparse kernels of this device, see
        ``objectives/deploy``), score it, and obtain the system objectives from their table
        (:mod:`~paretoml.objectives.system_objectives`); packed bytes count ``model`` itself."""
        unknown = [name for name in objectives if name not in self.catalog]
        if unknown:
            raise KeyError(f"unknown objective {unknown[0]!r}; available: {', '.join(self.catalog)}")
        timings: dict[str, float] = {}
        ctx = self._deployed_context(model, config, timings)
        size = self._split(split)[0].size
        t0 = time.perf_counter()
        if evaluation_rungs and gate is not None:
            self.evaluation_rungs(ctx.deployed.model, model, config, objectives, evaluation_rungs, gate, split)
        values, provenance, scored = self._score_metrics(ctx.deployed.model, objectives, split, size, timings)
        for name in (n for n in objectives if n in TABLE):
            entry, start = TABLE[name], time.perf_counter()
            values[name] = entry.obtain(ctx)
            if entry.timing is not None:
                timings[entry.timing] = time.perf_counter() - start
            provenance[name] = entry.provenance(ctx)
        attrs: dict[str, Any] = {"timings": {"measure_s": time.perf_counter() - t0, **timings},
                                 "kernels": deploy.kernel_summary(ctx.deployed.layers)}
        if evaluation_rungs and gate is not None:
            attrs["validation_samples"] = self.split_samples(split)
        attrs.update(self._trial_attrs(ctx, scored, with_bytes="model_bytes" not in values))
        return TrialResult(values, {name: provenance[name] for name in objectives}, attrs)

    def _context(self, model: nn.Module, config: TrialConfig) -> MeasureContext:
        """What the objectives known before evaluation are obtained from (no deployment)."""
        return MeasureContext(model, config, self.layers, self.device, latency=self.settings.latency,
                              deploy=self.settings.deploy)

    def _deployed_context(self, model: nn.Module, config: TrialConfig, timings: dict[str, float]) -> MeasureContext:
        """``model`` deployed on this device (kernel-table timings inside take the device
        alone), with the inputs latency and memory are measured on."""
        example = self.data.latency_example(self.settings.latency.batch_size)
        t_deploy = time.perf_counter()
        with gpu_work(self.device):
            deployment = deploy.deployable(model, config, self.device, example=example, deploy=self.settings.deploy)
        timings["deploy_s"] = time.perf_counter() - t_deploy
        return MeasureContext(model, config, self.layers, self.device, deployment=deployment, example=example,
                              memory_example=self.data.example, latency=self.settings.latency,
                              deploy=self.settings.deploy)

    def _score_metrics(self, run: nn.Module, objectives: Sequence[str], split: Split_, size: int | None,
                       timings: dict[str, float]) -> tuple[dict[str, float], dict[str, dict[str, str]], dict[str, float]]:
        """The task's metrics among ``objectives`` with their provenance, and all the scorer
        gave (one that scores together gives all its metrics from one pass)."""
        metrics = [name for name in objectives if name not in TABLE]
        if not metrics:
            return {}, {}, {}
        scorer = self.data.scorer
        t_score = time.perf_counter()
        scored = self.score(run, [m.name for m in scorer.metrics] if scorer.scores_together else metrics, split)
        timings["score_s"] = time.perf_counter() - t_score
        samples = f"{size} " if size is not None else ""
        provenance = {name: {"how": self.catalog[name].how,
                             "detail": f"{self.catalog[name].summary}; {samples}{split} samples",
                             **scorer.last_provenance.get(name, {})} for name in metrics}
        return {name: float(scored[name]) for name in metrics}, provenance, scored

    def _trial_attrs(self, ctx: MeasureContext, scored: dict[str, float], with_bytes: bool) -> dict[str, Any]:
        """What a trial records beside its objectives: the metrics a scorer gave together,
        the task's held-out attributes (a classifier's test accuracy), the packed bytes."""
        attrs: dict[str, Any] = {}
        if self.data.scorer.scores_together and scored:
            attrs["metrics"] = {name: float(value) for name, value in scored.items()}
        if self.data.held_out is not None:
            with gpu_work(self.device):
                attrs.update(self.data.held_out(ctx.deployed.model))
        if with_bytes:
            attrs["model_bytes"] = int(TABLE["model_bytes"].obtain(ctx))
        return attrs
