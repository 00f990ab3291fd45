"""``/tasks`` and ``/samplers``: the registered names a spec may use, with their options."""

from __future__ import annotations

from fastapi import APIRouter

from paretoml.objectives.tasks.registry import available_tasks
from paretoml.service.api import schemas
from paretoml.surrogates.registry import SAMPLERS

router = APIRouter(tags=["catalog"])


@router.get("/tasks", response_model=list[schemas.TaskInfo])
def list_tasks() -> list[schemas.TaskInfo]:
    return [schemas.TaskInfo(name=name, summary=cls.summary, options_schema=cls.Options.model_json_schema(),
                             extra=cls.extra, installed=not cls.missing_packages())
            for name, cls in sorted(available_tasks().items())]


@router.get("/samplers", response_model=list[schemas.SamplerInfo])
def list_samplers() -> list[schemas.SamplerInfo]:
    return [schemas.SamplerInfo(name=e.name, summary=e.summary, constraint_aware=e.constraint_aware,
                                options_schema=e.options.model_json_schema())
            for e in sorted(SAMPLERS.values(), key=lambda e: e.name)]
