"""The executor interface: submit trial jobs, collect outcomes as they finish.

A worker builds its task's evaluator once (model and data in memory) and then runs jobs;
an exception in a trial comes back as a failed outcome, never as an exception here.
"""

from __future__ import annotations

import os
import socket
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from paretoml.objectives.deploy import kernel_choices
from paretoml.objectives.evaluate import RungGate, StoppedAtRung, TrialEvaluator
from paretoml.search_space.introspect import LayerInfo
from paretoml.search_space.knobs import UNSTRUCTURED, BitwidthKnob, KVBitsKnob, PruneKnob
from paretoml.search_space.space import JointSpace, TrialConfig
from paretoml.service.spec import StudySpec
from paretoml.surrogates.kv_sensitivity import KVSensitivity, measure_kv_sensitivity
from paretoml.surrogates.sensitivity import LayerSensitivity, measure_sensitivity, prune_grid


@dataclass(frozen=True)
class TrialJob:
    trial_id: int
    number: int
    config: dict[str, Any]
    objectives: list[str]
    seed: int
    #: fine-tune steps at which the trial reports and asks whether to go on (empty: no pruning)
    rungs: tuple[int, ...] = ()
    #: fractions of the validation split whose prefixes the trial reports on, after its
    #: fine-tune (pruning over evaluation size; the step is the samples scored)
    evaluation_rungs: tuple[float, ...] = ()

    @property
    def has_rungs(self) -> bool:
        return bool(self.rungs or self.evaluation_rungs)


@dataclass(frozen=True)
class WorkerInfo:
    """Where a trial ran: shown per trial, and what the scale-out test checks."""

    worker: str
    node: str
    pid: int
    #: the GPUs Ray gave the worker (ids on its node), shared with others when fractional
    gpus: tuple[str, ...] = ()
    #: torch's intra-op threads while the trial ran (the worker's thread budget)
    threads: int | None = None


@dataclass(frozen=True)
class TrialOutcome:
    job: TrialJob
    worker: WorkerInfo
    values: dict[str, float] | None = None
    provenance: dict[str, dict[str, str]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: the rung step at which the pruner stopped the trial (then ``values`` is None)
    stopped_at: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.stopped_at is None


#: The driver's side of a rung: (trial id, step, values measured there) -> stop the trial?
RungDecider = Callable[[int, int, dict[str, float]], bool]


@dataclass(frozen=True)
class ModelDescription:
    """What the driver needs to know of the model without loading it itself."""

    layers: list[LayerInfo]
    other_params: int
    n_checkpoints: int
    reference: dict[str, Any]
    sensitivity: list[LayerSensitivity] | None = None
    #: samples of the validation split (the last step of rungs over evaluation size)
    validation_samples: int | None = None
    #: per attention layer, the change of the metric at each KV pair (a KV knob's warm start)
    kv_sensitivity: list[KVSensitivity] | None = None
    #: role -> layer -> the knob choices with a kernel of their own format on the workers'
    #: device (objectives/deploy kernel_choices); the driver's space keeps only these
    kernel_choices: dict[str, dict[str, list[Any]]] | None = None
    #: the workers' device, as torch names it
    device: str = "cpu"


def describe(evaluator: TrialEvaluator, spec: StudySpec, sensitivity: bool = True) -> ModelDescription:
    """The model as the driver needs it; per-layer sensitivities too when the spec asks (and
    ``sensitivity``: a pool measures them on one worker only)."""
    reference = evaluator.reference(spec.objective_names)
    evaluation_rungs = spec.pruner.name != "none" and spec.pruner.over == "evaluation"
    if evaluation_rungs:
        evaluator.prepare_prefixes(spec.pruner.rungs)  # the references on the prefixes, once
    measured = kv_measured = None
    bits_knob = next((k for k in spec.knobs if isinstance(k, BitwidthKnob)), None)
    kv_knob = next((k for k in spec.knobs if isinstance(k, KVBitsKnob)), None)
    space: JointSpace | None = None
    allowed = _kernel_choices(evaluator, spec)
    if sensitivity and spec.warm_start is not None and (bits_knob is not None or kv_knob is not None):
        try:  # the space as the driver offers it: choices without a kernel here are not measured
            space = JointSpace(spec.knobs, evaluator.layers, n_checkpoints=evaluator.n_checkpoints, allowed=allowed)
        except ValueError:
            space = None  # the driver reports the spec error
        if space is not None and kv_knob is not None and space.kv_layers:
            kv_measured = measure_kv_sensitivity(evaluator, space.kv_layers, space.kv_pairs())
        if space is not None and bits_knob is not None:
            prune_knob = next((k for k in spec.knobs if isinstance(k, PruneKnob) and k.method == UNSTRUCTURED), None)
            ratios = prune_grid(prune_knob.low, prune_knob.high, prune_knob.step) if prune_knob else []
            measured = measure_sensitivity(evaluator, space.bits_layers, space.layer_choices().get("bits", {}),
                                           ratios, space.unstructured_prune_layers)
    return ModelDescription(
        kernel_choices=allowed,
        device=str(evaluator.device),
        layers=evaluator.layers,
        other_params=evaluator.other_params,
        n_checkpoints=evaluator.n_checkpoints,
        reference={**reference.values, **{k: v for k, v in reference.attrs.items() if k != "timings"}},
        sensitivity=measured,
        validation_samples=evaluator.split_samples() if evaluation_rungs else None,
        kv_sensitivity=kv_measured,
    )


def _kernel_choices(evaluator: TrialEvaluator, spec: StudySpec) -> dict[str, dict[str, list[Any]]] | None:
    """The knob choices this worker's device can run in kernels of their own format."""
    try:
        space = JointSpace(spec.knobs, evaluator.layers, n_checkpoints=evaluator.n_checkpoints)
    except ValueError:
        return None  # the driver reports the spec error
    return kernel_choices(evaluator.model, space.layer_choices(), evaluator.device, spec.deploy.to_mode())


def run_job(evaluator: TrialEvaluator, job: TrialJob, worker: WorkerInfo,
            gate: RungGate | None = None) -> TrialOutcome:
    """Evaluate one job; any exception becomes a failed outcome with its traceback. With a
    ``gate`` the job stops at a rung when the gate says so (an outcome with ``stopped_at``)."""
    worker = replace(worker, threads=torch.get_num_threads())
    try:
        result = evaluator.evaluate(TrialConfig.from_dict(job.config), job.objectives, seed=job.seed,
                                    number=job.number, rungs=job.rungs, gate=gate,
                                    evaluation_rungs=job.evaluation_rungs)
    except StoppedAtRung as stop:
        return TrialOutcome(job, worker, stopped_at=stop.step)
    except Exception:  # a trial's failure is data, not a crash of the worker
        return TrialOutcome(job, worker, error=traceback.format_exc(limit=10))
    return TrialOutcome(job, worker, result.values, result.provenance, result.attrs)


def local_worker_info(name: str, node: str | None = None) -> WorkerInfo:
    return WorkerInfo(worker=name, node=node or socket.gethostname(), pid=os.getpid())


class Executor(ABC):
    """Runs trial jobs, at most ``slots`` at a time.

    ``rung_decider`` (set by the runner when the study has a pruner) is asked at each rung
    of a job with ``rungs``; an executor calls it from the thread that calls :meth:`wait`,
    so the decider may use the study freely."""

    rung_decider: RungDecider | None = None

    @property
    @abstractmethod
    def slots(self) -> int: ...

    @abstractmethod
    def start(self) -> ModelDescription:
        """Start the workers (each loads the task once) and describe the model."""

    @abstractmethod
    def submit(self, job: TrialJob) -> None:
        """Queue a job; callers keep at most ``slots`` jobs in flight."""

    @abstractmethod
    def wait(self, timeout: float) -> list[TrialOutcome]:
        """Outcomes of jobs finished since the last call; may block up to ``timeout`` s."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
