"""Task = model + data + evaluation, loaded once per worker and kept in memory."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from paretoml.search_space.space import TrialConfig


class TaskOptions(BaseModel):
    """Options a spec may pass to a task (``task_options``); tasks subclass this."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class TaskBundle:
    """Everything a trial needs, already on the task's device.

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


class Task(ABC):
    """A named, registered workload. Subclasses set ``name``, ``summary`` and ``Options``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type[TaskOptions]] = TaskOptions

    def __init__(self, options: TaskOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def load(self, device: torch.device) -> TaskBundle:
        """Build or fetch from the local cache the model and data; called once per worker."""

    def on_trial(self, config: TrialConfig, number: int) -> None:
        """Called in the worker before trial ``number`` is built; tasks rarely need it."""
