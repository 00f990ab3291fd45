"""``/studies/{id}/importances``: Optuna's parameter importances of a study.

The computation and its cache are in :mod:`paretoml.service.api.importances`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from paretoml.service.api.deps import Jobs, Reads
from paretoml.service.api.importances import Importances
from paretoml.service.api.responses import errors

router = APIRouter(tags=["analysis"])

StudyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="the study's id")]


@router.get("/studies/{study_id}/importances", response_model=Importances,
            responses=errors(404, 422, 503))
def get_importances(study_id: StudyId, jobs: Jobs, reads: Reads) -> Any:
    """Parameter importances per objective (PED-ANOVA over the completed trials)."""
    return reads.importances(jobs.get(study_id))
