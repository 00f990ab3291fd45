"""``paretoml.search``: compress your own model from Python, without writing a package.

The model and the functions are used in this process, or shipped by value (cloudpickle,
through Ray) to a pool of workers: nothing is imported by name on the other side. The
study is a plain Optuna study, in memory or in the database ``storage`` names.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from torch import nn

from paretoml.objectives.evaluate import SYSTEM_OBJECTIVES
from paretoml.objectives.tasks.base import Direction
from paretoml.objectives.tasks.python_model import EvaluateFn, PythonModelTask
from paretoml.search_space.introspect import ChannelLink
from paretoml.service.executors.base import Executor
from paretoml.service.executors.inprocess import InProcessExecutor
from paretoml.service.runner import StudyRunner
from paretoml.service.spec import SpecError, parse_spec


def search(
    model: nn.Module,
    *,
    evaluate: EvaluateFn,
    example_inputs: Any,
    knobs: Sequence[Mapping[str, Any] | Any],
    objectives: Sequence[str | Mapping[str, Any]],
    metrics: Mapping[str, Direction] | None = None,
    n_trials: int = 20,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    sampler: str | Mapping[str, Any] = "tpe",
    baselines: Sequence[int] = (),
    warm_start: bool | Mapping[str, Any] = False,
    measure: Mapping[str, Any] | None = None,
    seed: int = 0,
    workers: int = 1,
    ray_address: str | None = None,
    links: Mapping[str, ChannelLink] | None = None,
) -> optuna.Study:
    """Search compressions of ``model``; returns the Optuna study (its Pareto front is
    ``study.best_trials``, each trial's per-layer config is ``trial.user_attrs["paretoml:config"]``).

    ``evaluate(model) -> {metric: value}`` scores a compressed copy (a float will do for a
    single metric); ``metrics`` gives each metric's direction (default: ``{"score":
    "maximize"}``). ``objectives`` names metrics and system objectives (``latency_ms``,
    ``model_bytes``, ``peak_memory_bytes``, ``mean_bits``). ``example_inputs`` (a tensor, a
    tuple of args or a dict of kwargs) is what introspection, latency and memory run the
    model on. ``knobs``, ``sampler``, ``baselines`` and ``measure`` are as in a study spec.
    ``workers > 1`` runs trials on a Ray pool, each worker holding its own copy of the model.
    """
    metrics = dict(metrics or {"score": "maximize"})
    clash = sorted(set(metrics) & set(SYSTEM_OBJECTIVES))
    if clash:
        raise SpecError(f"metrics: {clash[0]!r} is a system objective; name your metric otherwise")
    name = study_name or _default_name(model)
    task = PythonModelTask(model, evaluate, example_inputs, metrics, links)
    document: dict[str, Any] = {
        "name": name,
        "task": task.name,
        "knobs": [k if isinstance(k, Mapping) else k.model_dump() for k in knobs],
        "objectives": [{"name": o} if isinstance(o, str) else dict(o) for o in objectives],
        "sampler": {"name": sampler} if isinstance(sampler, str) else dict(sampler),
        "n_trials": n_trials,
        "seed": seed,
        "baselines": list(baselines),
        "measure": dict(measure or {}),
    }
    if warm_start:
        document["warm_start"] = {"method": "sensitivity"} if warm_start is True else dict(warm_start)
    spec = parse_spec(document, {task.name: task})
    optuna_storage = _storage(storage)
    executor: Executor
    if workers > 1:
        from paretoml.service.executors.ray_pool import RayPoolExecutor, ship_by_value

        ship_by_value(model, evaluate)
        executor = RayPoolExecutor(spec, workers=workers, address=ray_address, task=task)
    else:
        executor = InProcessExecutor(spec, task=task)
    with executor:
        runner = StudyRunner.create(spec, optuna_storage, name, executor)
        return runner.run()


def _default_name(model: nn.Module) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", type(model).__name__.lower())[:60] or "model"
    return f"{stem}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}"


def _storage(storage: str | optuna.storages.BaseStorage | None) -> optuna.storages.BaseStorage:
    if storage is None:
        return optuna.storages.InMemoryStorage()
    if isinstance(storage, str):
        from paretoml.service.storage import open_storage

        return open_storage(storage)
    return storage

