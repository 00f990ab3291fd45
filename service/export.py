"""Export one completed trial of a stored study: rebuild its compressed model exactly as the
worker did (same config, same seed) and write it with :mod:`paretoml.objectives.deploy.export`.
Shared by ``paretoml export`` and ``GET /api/v1/studies/{id}/trials/{n}/export``."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import optuna
import torch
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from paretoml.objectives.deploy.export import Manifest, export_compressed
from paretoml.search_space.space import TrialConfig
from paretoml.search_space.trial_attrs import CONFIG_ATTR, PROVENANCE_ATTR, SPEC_ATTR
from paretoml.service.runner import build_evaluator
from paretoml.service.spec import StudySpec, parse_spec
from paretoml.service.storage import study_exists


class ExportNotFoundError(LookupError):
    def __str__(self) -> str:
        return str(self.args[0])


class TrialNotCompleteError(ValueError):
    pass


def find_trial(storage: BaseStorage, study_name: str, number: int) -> tuple[StudySpec, FrozenTrial]:
    """The study's spec and its completed trial ``number``, or a clear error."""
    if not study_exists(storage, study_name):
        raise ExportNotFoundError(f"no study named {study_name!r}")
    study_id = storage.get_study_id_from_name(study_name)
    raw = storage.get_study_user_attrs(study_id).get(SPEC_ATTR)
    if raw is None:
        raise ExportNotFoundError(f"study {study_name!r} was not made by paretoml (it has no stored spec)")
    trial = next((t for t in storage.get_all_trials(study_id, deepcopy=False) if t.number == number), None)
    if trial is None:
        raise ExportNotFoundError(f"study {study_name!r} has no trial {number}")
    if trial.state != TrialState.COMPLETE or CONFIG_ATTR not in trial.user_attrs:
        raise TrialNotCompleteError(f"trial {number} of {study_name!r} is {trial.state.name.lower()}, not complete: "
                                    "only completed trials can be exported")
    return parse_spec(raw), trial


def _export_device(spec: StudySpec) -> torch.device:
    """The study's measuring device where this machine has it; else the CPU (the packed file
    does not depend on the device, only the manifest's kernel column does)."""
    if spec.measure.device in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def export_trial(storage: BaseStorage, study_name: str, number: int, out_dir: str | Path) -> Manifest:
    spec, trial = find_trial(storage, study_name, number)
    config = TrialConfig.from_dict(trial.user_attrs[CONFIG_ATTR])
    device = _export_device(spec)  # fine-tuning on the study's device gives the trial's very weights
    evaluator = build_evaluator(spec.model_copy(update={"measure": spec.measure.model_copy(
        update={"device": device.type})}))
    model, _ = evaluator.build(config, seed=spec.seed + trial.number, number=trial.number)
    values = dict(zip(spec.objective_names, trial.values or []))
    return export_compressed(model, config, out_dir, task=spec.task, task_options=spec.task_options,
                             device=device, objectives=values,
                             provenance=trial.user_attrs.get(PROVENANCE_ATTR, {}), study=study_name,
                             trial=trial.number)


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
