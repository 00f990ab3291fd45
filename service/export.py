"""Export one completed trial of a stored study: rebuild its compressed model exactly as the
worker did (same config, same seed) and write it with :mod:`paretoml.objectives.deploy.export`.
Shared by ``paretoml export`` and ``GET /api/v1/studies/{id}/trials/{n}/export``."""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from paretoml.objectives.deploy.export import Manifest, export_compressed
from paretoml.objectives.tasks.base import Task
from paretoml.objectives.tasks.python_model import PYTHON_MODEL_TASK
from paretoml.search_space.space import TrialConfig
from paretoml.search_space.trial_attrs import CONFIG_ATTR, KERNELS_ATTR, PROVENANCE_ATTR, SPEC_ATTR
from paretoml.service.runner import build_evaluator
from paretoml.service.spec import StudySpec, parse_spec
from paretoml.service.storage import study_exists


class ExportNotFoundError(LookupError):
    def __str__(self) -> str:
        return str(self.args[0])


class TrialNotCompleteError(ValueError):
    pass


class NeedsPythonModelError(ValueError):
    """The study was made by ``paretoml.search``: its model lives in the user's Python
    process, so only :func:`paretoml.export` given that model can rebuild a trial."""


def python_export_hint(study_name: str) -> str:
    return (f"study {study_name!r} was made by paretoml.search from a model given in Python; export its trials "
            "from Python: paretoml.export(study, trial, model=model, example_inputs=inputs, out='DIR')")


def completed_trial(study_name: str, raw: dict[str, Any] | None, trials: Sequence[FrozenTrial],
                    number: int, task: Task | None = None) -> tuple[StudySpec, FrozenTrial]:
    """The spec (validated with ``task``, the model given from Python, if any) and the
    completed trial ``number`` of a study, or a clear error."""
    if raw is None:
        raise ExportNotFoundError(f"study {study_name!r} was not made by paretoml (it has no stored spec)")
    if raw.get("task") == PYTHON_MODEL_TASK and task is None:
        raise NeedsPythonModelError(python_export_hint(study_name))
    trial = next((t for t in trials if t.number == number), None)
    if trial is None:
        raise ExportNotFoundError(f"study {study_name!r} has no trial {number}")
    if trial.state != TrialState.COMPLETE or CONFIG_ATTR not in trial.user_attrs:
        raise TrialNotCompleteError(f"trial {number} of {study_name!r} is {trial.state.name.lower()}, not complete: "
                                    "only completed trials can be exported")
    return parse_spec(raw, {task.name: task} if task is not None else None), trial


def find_trial(storage: BaseStorage, study_name: str, number: int) -> tuple[StudySpec, FrozenTrial]:
    """The study's spec and its completed trial ``number``, or a clear error."""
    if not study_exists(storage, study_name):
        raise ExportNotFoundError(f"no study named {study_name!r}")
    study_id = storage.get_study_id_from_name(study_name)
    raw = storage.get_study_user_attrs(study_id).get(SPEC_ATTR)
    return completed_trial(study_name, raw, storage.get_all_trials(study_id, deepcopy=False), number)


def _export_device(spec: StudySpec) -> torch.device:
    """The study's measuring device where this machine has it; else the CPU (a runtime
    export holds the kernels of the device it is written on)."""
    if spec.measure.device in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def export_trial(storage: BaseStorage, study_name: str, number: int, out_dir: str | Path) -> Manifest:
    spec, trial = find_trial(storage, study_name, number)
    return export_completed(spec, trial, study_name, out_dir)


def export_completed(spec: StudySpec, trial: FrozenTrial, study_name: str, out_dir: str | Path,
                     task: Task | None = None) -> Manifest:
    """Rebuild a completed trial's compressed model (``task``: the model given from Python)
    and write it to ``out_dir``."""
    config = TrialConfig.from_dict(trial.user_attrs[CONFIG_ATTR])
    device = _export_device(spec)  # fine-tuning on the study's device gives the trial's very weights
    evaluator = build_evaluator(spec.model_copy(update={"measure": spec.measure.model_copy(
        update={"device": device.type})}), task=task)
    model, _ = evaluator.build(config, seed=spec.seed + trial.number, number=trial.number)
    values = dict(zip(spec.objective_names, trial.values or []))
    recorded = trial.user_attrs.get(KERNELS_ATTR, {})  # the kernels the trial ran: the export runs them too
    return export_compressed(model, config, out_dir, task=spec.task, task_options=spec.task_options,
                             device=device, objectives=values,
                             provenance=trial.user_attrs.get(PROVENANCE_ATTR, {}), study=study_name,
                             trial=trial.number, deploy=spec.deploy.to_mode(),
                             kernels={name: row["kernel"] for name, row in recorded.items()})


def export_archive(storage: BaseStorage, study_name: str, number: int) -> bytes:
    """The export as a zip archive (the REST download)."""
    with tempfile.TemporaryDirectory(prefix="paretoml-export-") as tmp:
        export_trial(storage, study_name, number, tmp)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for path in sorted(Path(tmp).iterdir()):
                archive.write(path, arcname=f"{study_name}-trial{number}/{path.name}")
        return buffer.getvalue()


def load_study_storage(url: str) -> BaseStorage:
    from paretoml.service.storage import open_storage

    return optuna.storages.get_storage(open_storage(url))
