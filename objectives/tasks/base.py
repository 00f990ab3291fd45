"""Task = model + data + evaluation, loaded once per worker and kept in memory.

Two forms of loaded task exist:

* :class:`TaskBundle`: a classifier that takes one tensor, with every split held as a
  tensor (the digits tasks). The evaluator turns it into the general form once, when it
  loads the task (``objectives.tasks.classifier``), and sees only that form.
* :class:`ModelBundle`: the general form for real models: batches of any structure (a
  tensor, a tuple, or a dict of tensors such as HF ``input_ids`` + ``attention_mask``),
  splits streamed from re-iterable sources, example inputs as args/kwargs, and a
  :class:`Scorer` that computes the task's own metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from paretoml.objectives.compress.merge import MergeSettings
from paretoml.objectives.train import FinetuneData
from paretoml.search_space.introspect import ChannelLink
from paretoml.search_space.space import TrialConfig

Direction = Literal["minimize", "maximize"]
How = Literal["measured", "estimated"]
#: A batch as the model takes it: a tensor, a tuple of args, or a dict of kwargs.
Batch = Any


@dataclass(frozen=True)
class ObjectiveDef:
    """An objective a study may ask for: its direction and how it is obtained.

    Args:
        name: the objective's name in specs, storage and Optuna's metric names.
        direction: ``"maximize"`` or ``"minimize"``.
        how: ``"measured"`` or ``"estimated"`` (provenance).
        summary: one line for the catalog.
        known_before_evaluation: computed from the trial's config alone (no model run), so
            it is the same at every rung and never a rung's intermediate value.
    """

    name: str
    direction: Direction
    how: How
    summary: str
    known_before_evaluation: bool = False


#: The metrics of a classifier task (a :class:`TaskBundle`): what digits tasks measure.
CLASSIFIER_METRICS: tuple[ObjectiveDef, ...] = (
    ObjectiveDef("accuracy", "maximize", "measured", "top-1 accuracy on the task's validation split"),
    ObjectiveDef("fidelity", "maximize", "measured", "top-1 agreement with the uncompressed model"),
)


class MissingExtraError(ImportError):
    """A task's optional extra (its model package, ``transformers``) is not installed."""


class TaskOptions(BaseModel):
    """Options a spec may pass to a task (``task_options``); tasks subclass this."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def call_model(model: nn.Module, batch: Batch) -> Any:
    """Run ``model`` on a batch of any structure: ``model(x)``, ``model(*t)`` or ``model(**d)``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def first_tensor(value: Any) -> torch.Tensor:
    """The main tensor of a model output or batch: itself, the first of a tuple/dict, or an
    HF output's ``last_hidden_state`` / first field."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        for item in value.values():
            if isinstance(item, torch.Tensor):
                return item
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
    to_tuple = getattr(value, "to_tuple", None)
    if to_tuple is not None:
        return first_tensor(to_tuple())
    raise TypeError(f"no tensor in {type(value).__name__}")


def batch_length(batch: Batch) -> int:
    """Samples in a batch: the leading dimension of its main tensor."""
    tensor = first_tensor(batch)
    return int(tensor.shape[0]) if tensor.dim() > 0 else 1


def batch_head(batch: Batch, n: int) -> Batch:
    """The first ``n`` samples of a batch of any structure (every tensor cut on dim 0)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, Mapping):
        return {k: batch_head(v, n) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(batch_head(v, n) for v in batch)
    return batch


def batch_to(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: batch_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(batch_to(v, device) for v in batch)
    return batch


@dataclass(frozen=True)
class ExampleInputs:
    """The inputs latency, memory and introspection run the model on: ``model(*args, **kwargs)``."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, value: Any) -> ExampleInputs:
        """From a tensor (one arg), a tuple/list (args), a dict (kwargs) or an ExampleInputs."""
        if isinstance(value, ExampleInputs):
            return value
        if isinstance(value, Mapping):
            return cls((), dict(value))
        if isinstance(value, (tuple, list)):
            return cls(tuple(value), {})
        return cls((value,), {})

    def __call__(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (*self.args, *self.kwargs.values()) if isinstance(t, torch.Tensor)]

    @property
    def batch_size(self) -> int:
        tensors = self.tensors()
        return int(tensors[0].shape[0]) if tensors and tensors[0].dim() > 0 else 1

    @property
    def is_cuda(self) -> bool:
        return any(t.is_cuda for t in self.tensors())

    @property
    def device(self) -> torch.device:
        tensors = self.tensors()
        return tensors[0].device if tensors else torch.device("cpu")

    def to(self, device: torch.device) -> ExampleInputs:
        return ExampleInputs(batch_to(self.args, device), batch_to(self.kwargs, device))


class Split:
    """A re-iterable stream of batches: iterating it again starts again from the first batch.

    ``source`` is a sequence of batches, or a function returning a fresh iterable (a
    generator reading from disk, a DataLoader): nothing requires the split in memory.
    """

    def __init__(self, source: Sequence[Batch] | Callable[[], Iterable[Batch]], size: int | None = None,
                 description: str = "") -> None:
        self._source = source
        self.size = size
        self.description = description

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._source() if callable(self._source) else self._source)

    def head(self, n: int) -> Split:
        """The first ``n`` samples of this split, as a split (the last batch cut to fit): the
        growing prefixes that evaluation rungs score a trial on."""

        def batches() -> Iterator[Batch]:
            left = n
            if left <= 0:
                return
            for batch in self:
                length = batch_length(batch)
                yield batch if length <= left else batch_head(batch, left)
                left -= length
                if left <= 0:  # stop before the stream makes another batch
                    return

        return Split(batches, size=n, description=f"first {n} of {self.description or 'the split'}")

    def spread(self, n: int) -> Split:
        """``n`` samples taken from every batch in proportion to its size (its first rows), as
        a split: what evaluation rungs score a trial on. A split sorted by length (the
        sentence encoders batch like lengths together) is then sampled across all lengths,
        where its first ``n`` samples would be its shortest."""
        total = self.count()

        def batches() -> Iterator[Batch]:
            seen = taken = 0
            for batch in self:
                seen += batch_length(batch)
                take = round(n * seen / total) - taken  # the running share: exactly n in all
                if take > 0:
                    yield batch_head(batch, take)
                    taken += take

        return Split(batches, size=min(n, total),
                     description=f"{n} samples spread over {self.description or 'the split'}")

    def count(self) -> int:
        """Its samples: ``size`` where known, else counted by one pass over the batches."""
        return self.size if self.size is not None else sum(batch_length(b) for b in self)

    @classmethod
    def of_tensors(cls, *tensors: torch.Tensor, batch_size: int = 512, description: str = "") -> Split:
        """Batches of aligned tensors (one tensor: the batch is the tensor itself)."""
        n = len(tensors[0])

        def batches() -> Iterator[Batch]:
            for i in range(0, n, batch_size):
                parts = tuple(t[i : i + batch_size] for t in tensors)
                yield parts[0] if len(parts) == 1 else parts

        return cls(batches, size=n, description=description)


class Scorer(ABC):
    """Computes a task's own metrics on a split, against the uncompressed model's reference.

    ``reference`` is called once per split on the uncompressed model (e.g. its embeddings);
    ``score`` once per trial, for the metrics the study asks for.
    """

    metrics: tuple[ObjectiveDef, ...] = ()
    #: all metrics come from one pass (e.g. one set of embeddings), so a trial scores them all
    #: and keeps those the study does not optimise as attributes; False: only those asked for
    scores_together: ClassVar[bool] = True
    #: set by :meth:`score` where a metric of that trial is not obtained as its definition
    #: says (e.g. a kernel stood in for): ``{name: {"how": ..., "detail": ...}}``
    last_provenance: dict[str, dict[str, str]] = {}

    def reference(self, model: nn.Module, split: Split) -> Any:
        return None

    def scorable(self) -> tuple[str, ...]:
        """The metrics the task's data lets this scorer compute, the primary one first: all of
        ``metrics`` unless data is missing (a classifier without labels has no accuracy)."""
        return tuple(m.name for m in self.metrics)

    @abstractmethod
    def score(self, model: nn.Module, split: Split, reference: Any, names: Sequence[str]) -> dict[str, float]:
        """``{name: value}`` for each of ``names`` (all among ``metrics``)."""


@dataclass
class TaskBundle:
    """A classifier task with every split in memory (the digits tasks).

    ``val_labels`` may be None: the task then has no labels and trials are scored by their
    fidelity to the uncompressed model. ``checkpoints`` are the extra state dicts that merge
    knobs blend with ``model``'s own weights (the base).
    """

    model: nn.Module
    example_input: torch.Tensor
    val_inputs: torch.Tensor
    val_labels: torch.Tensor | None
    train_inputs: torch.Tensor | None = None
    train_labels: torch.Tensor | None = None
    test_inputs: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    checkpoints: list[dict[str, torch.Tensor]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelBundle:
    """A real model's task: streamed splits, example inputs and the task's own scorer.

    ``calibration`` is what cheap passes use (the sensitivity warm start); trials are scored
    on ``validation``; ``test`` is held out. ``links`` are the channel links the task knows
    of (where ``torch.fx`` cannot trace the model, introspection cannot find them itself),
    so structured pruning can remove heads and neurons for real.

    A classifier's :class:`TaskBundle` becomes one (``objectives.tasks.classifier``) with the
    rest filled in: ``checkpoints`` (the state dicts merge knobs blend with ``model``'s
    weights, combined as ``merge`` says), ``finetune`` (what a trial's recovery fine-tune
    trains on: inputs, labels and the loss; None: the task has none), ``example_cuts`` (the
    example is a pile of samples, so latency times its first ``batch_size``; otherwise it is
    one call's inputs, timed as the task made them) and ``held_out`` (attributes each trial
    records from the test split, e.g. test accuracy).
    """

    model: nn.Module
    example: ExampleInputs
    validation: Split
    scorer: Scorer
    calibration: Split | None = None
    test: Split | None = None
    links: dict[str, ChannelLink] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[dict[str, torch.Tensor]] = field(default_factory=list)
    merge: MergeSettings = field(default_factory=MergeSettings)
    finetune: FinetuneData | None = None
    example_cuts: bool = False
    held_out: Callable[[nn.Module], dict[str, float]] | None = None

    def latency_example(self, batch_size: int) -> ExampleInputs:
        """The inputs latency is timed on: the example, cut to ``batch_size`` where it may be."""
        if not self.example_cuts:
            return self.example
        return ExampleInputs(batch_head(self.example.args, batch_size), batch_head(self.example.kwargs, batch_size))


class Task(ABC):
    """A named, registered workload. Subclasses set ``name``, ``summary`` and ``Options``,
    and ``metrics`` when they define their own (a :class:`ModelBundle` task)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    metrics: ClassVar[tuple[ObjectiveDef, ...]] = CLASSIFIER_METRICS
    #: the optional extra (``paretoml[EXTRA]``) the task needs installed; None: no extra
    extra: ClassVar[str | None] = None
    #: the distributions of that extra the task loads, checked by :meth:`missing_packages`
    requires: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def missing_packages(cls) -> list[str]:
        """The required distributions not installed here (so a listing can say "installed"
        rather than "needs" when the extra is there)."""
        missing = []
        for name in cls.requires:
            try:
                metadata.distribution(name)
            except metadata.PackageNotFoundError:
                missing.append(name)
        return missing

    def __init__(self, options: TaskOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def load(self, device: torch.device) -> TaskBundle | ModelBundle:
        """Build or fetch from the local cache the model and data; called once per worker."""

    def on_trial(self, config: TrialConfig, number: int) -> None:
        """Called in the worker before trial ``number`` is built; tasks rarely need it."""

    def compress(self, model: nn.Module, config: TrialConfig) -> nn.Module:
        """The task's own part of compressing a trial's copy (after pruning, before
        quantisation), e.g. a causal LM's KV-cache formats; most tasks have none."""
        return model
