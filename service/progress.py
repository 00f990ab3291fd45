"""A progress bar for a running study: trials done of the budget, and each objective's best
feasible value so far. Shared by ``paretoml run`` / ``resume`` and ``paretoml.search``; it
draws only on a terminal (or a notebook), so logs and pipes get no bar."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from paretoml.service.frontier import is_feasible


def wants_bar(console: Console) -> bool:
    """A bar only where someone watches it redraw."""
    return console.is_terminal or console.is_jupyter


class BestValues:
    """Each objective's best value among the feasible completed trials seen so far."""

    def __init__(self, names: Sequence[str], directions: Sequence[optuna.study.StudyDirection]) -> None:
        self.names = list(names)
        self.maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in directions]
        self.best: list[float | None] = [None] * len(self.names)

    def add(self, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE or trial.values is None or not is_feasible(trial):
            return
        for i, value in enumerate(trial.values[: len(self.names)]):
            if not math.isfinite(value):
                continue
            current = self.best[i]
            if current is None or (value > current if self.maximize[i] else value < current):
                self.best[i] = value

    def text(self) -> str:
        shown = [f"{name} {value:,.4g}" for name, value in zip(self.names, self.best) if value is not None]
        return "best " + ", ".join(shown) if shown else ""


class StudyProgress:
    """A runner's ``progress`` callback that draws a rich bar; a context manager.

    Args:
        study: the study being run (its finished trials seed the best values on a resume).
        names: the objectives' names, in the study's order.
        console: where to draw; nothing is drawn when ``enabled`` is False.
        enabled: draw the bar (default: only when ``console`` is a terminal or a notebook).
    """

    def __init__(self, study: optuna.Study, names: Sequence[str], console: Console | None = None,
                 enabled: bool | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = wants_bar(self.console) if enabled is None else enabled
        self.best = BestValues(names, study.directions)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self.best.add(trial)
        self._bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             TextColumn("{task.fields[best]}"), console=self.console, disable=not self.enabled,
                             transient=False)
        self._task: Any = None

    def __enter__(self) -> StudyProgress:
        self._bar.__enter__()
        self._task = self._bar.add_task("trials", total=None, best=escape(self.best.text()))
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, done: int, budget: int, trial: FrozenTrial | None) -> None:
        if trial is not None:
            self.best.add(trial)
        self._bar.update(self._task, completed=done, total=budget, best=escape(self.best.text()))
