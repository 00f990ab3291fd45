"""A task made in this process from a model object and an evaluate function (the Python API).

It is never registered: a spec names it only inside the process that made it (and the Ray
workers it is shipped to by value), so the REST service, which accepts registered task
names only, cannot reach it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

import torch
from torch import nn

from paretoml.objectives.tasks.base import (
    Direction,
    ExampleInputs,
    ModelBundle,
    ObjectiveDef,
    Scorer,
    Split,
    Task,
)
from paretoml.search_space.introspect import ChannelLink

EvaluateFn = Callable[[nn.Module], Mapping[str, float] | float]
#: The task name of every study made by ``paretoml.search`` (never a registered name).
PYTHON_MODEL_TASK = "python-model"


class FunctionScorer(Scorer):
    """The user's ``evaluate(model) -> {metric: value}`` as a scorer (it brings its own data)."""

    def __init__(self, evaluate: EvaluateFn, metrics: tuple[ObjectiveDef, ...]) -> None:
        self.evaluate = evaluate
        self.metrics = metrics

    def score(self, model: nn.Module, split: Split, reference: Any, names: Sequence[str]) -> dict[str, float]:
        with torch.inference_mode():
            returned = self.evaluate(model)
        if isinstance(returned, Real) and len(self.metrics) == 1:
            returned = {self.metrics[0].name: float(returned)}
        if not isinstance(returned, Mapping):
            raise TypeError(f"evaluate must return a dict of metric values, got {type(returned).__name__}")
        missing = [name for name in names if name not in returned]
        if missing:
            raise KeyError(f"evaluate returned {sorted(returned)}, without the objective {missing[0]!r}")
        return {name: float(returned[name]) for name in names}


class PythonModelTask(Task):
    """``model`` + ``evaluate`` + ``example_inputs``, given from Python."""

    name = PYTHON_MODEL_TASK
    summary = "a model and an evaluate function given from Python (paretoml.search)"

    def __init__(self, model: nn.Module, evaluate: EvaluateFn, example_inputs: Any,
                 metrics: Mapping[str, Direction], links: Mapping[str, ChannelLink] | None = None,
                 name: str = PYTHON_MODEL_TASK) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.model = model
        self.evaluate = evaluate
        self.example_inputs = ExampleInputs.of(example_inputs)
        self.metrics = tuple(  # type: ignore[misc]
            ObjectiveDef(n, d, "measured", "returned by the evaluate function given from Python")
            for n, d in metrics.items()
        )
        self.links = dict(links or {})

    def load(self, device: torch.device) -> ModelBundle:
        return ModelBundle(
            model=self.model.to(device).eval(),
            example=self.example_inputs.to(device),
            validation=Split([], size=None, description="the evaluate function's own data"),
            scorer=FunctionScorer(self.evaluate, self.metrics),
            links=self.links,
        )
