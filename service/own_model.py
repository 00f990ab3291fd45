"""``paretoml.search``: compress your own model from Python, without writing a package.

The model and the functions are used in this process, or shipped by value (cloudpickle,
through Ray) to a pool of workers: nothing is imported by name on the other side. The
study is a plain Optuna study, in memory or in the database ``storage`` names.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console
from rich.markup import escape
from torch import nn

from paretoml.objectives.deploy.export import Manifest

from paretoml.objectives.evaluate import SYSTEM_OBJECTIVES
from paretoml.objectives.tasks.base import Direction
from paretoml.objectives.tasks.python_model import EvaluateFn, PythonModelTask
from paretoml.search_space.example_fit import NOT_FITTING, ExampleInputsError
from paretoml.search_space.introspect import ChannelLink
from paretoml.search_space.trial_attrs import SPEC_ATTR
from paretoml.service.executors.base import Executor
from paretoml.service.executors.inprocess import InProcessExecutor
from paretoml.service.progress import StudyProgress
from paretoml.service.runner import StudyRunner, count_complete
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
    measure: Mapping[str, Any] | None = None, deploy: Mapping[str, Any] | None = None,
    seed: int = 0,
    workers: int = 1,
    ray_address: str | None = None,
    links: Mapping[str, ChannelLink] | None = None,
    threads: int | None = None,
    progress: bool | None = None,
) -> optuna.Study:
    """Search compressions of ``model``; returns the Optuna study (its Pareto front is
    ``study.best_trials``, each trial's per-layer config is ``trial.user_attrs["paretoml:config"]``).

    ``evaluate(model) -> {metric: value}`` scores the trial's deployed model (a float will do for one
    metric): call it, never read weights, as a knob layer is its packed kernel. ``metrics`` gives each
    metric's direction (default: ``{"score": "maximize"}``). ``objectives`` names metrics and system
    objectives (``latency_ms``, ``model_bytes``, ``peak_memory_bytes``, ``mean_bits``). ``example_inputs``
    (a tensor, a tuple of args or a dict of kwargs) is what introspection, latency and memory run the
    model on. ``knobs``, ``sampler``, ``baselines``, ``measure`` and ``deploy`` are as in a study spec.
    ``workers > 1`` runs trials on a Ray pool, each worker holding its own copy of the model.
    ``threads`` is the thread budget of this process while it searches and of each worker
    (default: 1 here, given back afterwards; a worker's CPU share).
    ``progress`` draws a bar of trials done and best values on stderr (default: only on a
    terminal or in a notebook).
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
        "measure": dict(measure or {}), "deploy": dict(deploy or {}),
    }
    if threads is not None:
        document["threads"] = {"driver": threads, "worker": threads}
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
        try:
            runner = StudyRunner.create(spec, optuna_storage, name, executor)
        except ExampleInputsError as exc:  # raised where the model first runs: here, or in a Ray worker
            text = str(exc)
            raise SpecError(f"example_inputs: {text[max(0, text.find(NOT_FITTING)):].splitlines()[0]}") from None
        Console(stderr=True).print(f"paretoml.search: {escape(runner.coverage.describe())}", soft_wrap=True)
        with _listed(storage, runner) as listing, StudyProgress(runner.study, spec.objective_names,
                                                                  enabled=progress) as bar:
            study = runner.run(bar)
            listing.done = count_complete(study) >= spec.n_trials
            return study


class _Listing:
    done = False


@contextmanager
def _listed(storage: object, runner: StudyRunner) -> Iterator[_Listing]:
    """In a database named by URL, the study's row in the jobs table, so that REST and the
    dashboard list and read it (read-only: resume stays with Python), a stop asked there
    stops it, and its stored Pareto front stays current."""
    listing = _Listing()
    if not isinstance(storage, str):
        yield listing
        return
    from paretoml.service.frontier import FrontierRecorder
    from paretoml.service.jobs import PYTHON_SOURCE, JobLease, JobRepository, JobStatus, owner_name
    from paretoml.service.settings import Settings

    jobs = JobRepository(storage)
    name = runner.study.study_name
    owner = owner_name(PYTHON_SOURCE)
    jobs.take_for_cli(name, runner.spec, owner, Settings.model_fields["job_grace_s"].default, fresh=True,
                      source=PYTHON_SOURCE)
    runner.on_trial.append(FrontierRecorder(storage, runner.study, runner.spec.objective_names,
                                            runner.model.reference))
    failure: BaseException | None = None
    try:
        with JobLease(jobs, name, owner, runner.stop_event):
            yield listing
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if failure is not None and not isinstance(failure, KeyboardInterrupt):
            jobs.finish(name, JobStatus.failed, f"{type(failure).__name__}: {failure}")
        else:
            jobs.finish(name, JobStatus.completed if listing.done else JobStatus.stopped)


def export(study: optuna.Study, trial: int | FrozenTrial, *, model: nn.Module, example_inputs: Any,
           out: str | Path, links: Mapping[str, ChannelLink] | None = None) -> Manifest:
    """Write a completed trial of a ``paretoml.search`` study as ``paretoml export`` does
    (packed weights as safetensors, and a manifest), rebuilt from ``model``: the uncompressed
    model the study searched, with the ``example_inputs`` (and ``links``) it was given.

    ``study`` is what ``search`` returned, or ``optuna.load_study(...)`` of it; reload the
    export with ``paretoml.load_compressed(out, skeleton=model)``.
    """
    from paretoml.service.export import completed_trial, export_completed

    number = trial.number if isinstance(trial, FrozenTrial) else int(trial)
    raw = study.user_attrs.get(SPEC_ATTR)
    metrics = _metrics_of(raw, study) if raw is not None else {}
    task = PythonModelTask(model, _not_scored, example_inputs, metrics, links)
    spec, frozen = completed_trial(study.study_name, raw, study.get_trials(deepcopy=False), number, task)
    return export_completed(spec, frozen, study.study_name, out, task=task)


def _metrics_of(raw: Mapping[str, Any], study: optuna.Study) -> dict[str, Direction]:
    """The user's metrics of a stored spec, with the study's directions."""
    directions = ["maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize" for d in study.directions]
    return {o["name"]: o.get("direction") or directions[i]  # type: ignore[misc]
            for i, o in enumerate(raw.get("objectives", [])) if o["name"] not in SYSTEM_OBJECTIVES}


def _not_scored(model: nn.Module) -> dict[str, float]:
    raise RuntimeError("export rebuilds a trial's model; it does not score it")


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

