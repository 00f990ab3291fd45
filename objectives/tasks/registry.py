"""Task registry: built-in tasks by name, plus third-party tasks found through the
entry-point group ``paretoml.tasks``. Only installed code is ever loaded: a spec names a
task, it never names a module.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from paretoml.objectives.tasks.base import Task
from paretoml.objectives.tasks.causal_lm import CausalLMTask
from paretoml.objectives.tasks.digits import DigitsCNNTask
from paretoml.objectives.tasks.digits_merge import DigitsMergeTask
from paretoml.objectives.tasks.minilm import MiniLMTask
from paretoml.objectives.tasks.mpnet import MPNetTask
from paretoml.objectives.tasks.smollm2 import SmolLM2Task
from paretoml.objectives.tasks.smollm2_merge import SmolLM2MergeTask
from paretoml.objectives.tasks.synthetic import SyntheticTask

ENTRY_POINT_GROUP = "paretoml.tasks"
_BUILTIN: dict[str, type[Task]] = {cls.name: cls for cls in (CausalLMTask, DigitsCNNTask, DigitsMergeTask, MiniLMTask, MPNetTask, SmolLM2Task, SmolLM2MergeTask, SyntheticTask)}
_REGISTERED: dict[str, type[Task]] = {}


class UnknownTaskError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register_task(cls: type[Task]) -> type[Task]:
    """Register a task class in this process (also usable as a decorator)."""
    _REGISTERED[cls.name] = cls
    return cls


def _from_entry_points() -> dict[str, type[Task]]:
    found: dict[str, type[Task]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BUILTIN:
            continue
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP!r} is not a Task subclass")
        found[ep.name] = cls
    return found


def available_tasks() -> dict[str, type[Task]]:
    return {**_BUILTIN, **_from_entry_points(), **_REGISTERED}


def task_class(name: str) -> type[Task]:
    tasks = available_tasks()
    if name not in tasks:
        raise UnknownTaskError(f"unknown task {name!r}; available: {', '.join(sorted(tasks))}")
    return tasks[name]


def create_task(name: str, options: dict[str, Any] | None = None) -> Task:
    """Instantiate a task; raises pydantic's ValidationError for bad options."""
    cls = task_class(name)
    return cls(cls.Options.model_validate(options or {}))


__all__ = ["available_tasks", "create_task", "register_task", "task_class", "UnknownTaskError"]
