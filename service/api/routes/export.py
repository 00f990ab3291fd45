"""``/studies/{id}/trials/{n}/export``: download a completed trial's compressed model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status
from fastapi.concurrency import run_in_threadpool

from paretoml.service.api.deps import Jobs, Reads
from paretoml.service.api.responses import errors
from paretoml.service.api.routes.studies import StudyId
from paretoml.service.export import ExportNotFoundError, NeedsPythonModelError, TrialNotCompleteError, export_archive

router = APIRouter(tags=["export"])

_ARCHIVE = {"description": "a zip of `model.safetensors` (packed weights, scales, masks) and `manifest.json`",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}


@router.get("/studies/{study_id}/trials/{number}/export", response_class=Response,
            responses={200: _ARCHIVE, **errors(404, 409, 422, 503, descriptions={
                404: "no study with this id, or no trial with this number in it",
                409: "the trial is not complete (running, failed or pruned): only completed trials are exported; "
                     "or the study was made by paretoml.search (export it from Python)"})})
async def export_trial(study_id: StudyId, number: Annotated[int, Path(ge=0, le=10_000_000)], jobs: Jobs,
                       reads: Reads) -> Response:
    """The trial's compressed model: packed integer weights, scales and masks as safetensors,
    and a manifest (config, per-layer formats and kernels, objectives with provenance).
    The model is rebuilt from the task and the trial's config, which takes a few seconds."""
    jobs.get(study_id)  # 404 for an unknown study
    try:
        body = await run_in_threadpool(export_archive, reads.storage, study_id, number)
    except ExportNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except (TrialNotCompleteError, NeedsPythonModelError) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    filename = f"{study_id}-trial{number}.zip"
    return Response(body, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
