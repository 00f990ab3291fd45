"""``/studies``: submit, list, read, stop, resume and delete search jobs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Body, HTTPException, Path, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from paretoml.service.api import schemas
from paretoml.service.api.deps import Jobs, Reads, Writer
from paretoml.service.api.reads import STATES_BY_NAME
from paretoml.service.api.responses import BODY_ERRORS, errors
from paretoml.service.jobs import JobStatus
from paretoml.service.spec import StudySpec, load_yaml

router = APIRouter(tags=["studies"])

StudyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="the study's id")]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


# What a created study's id leads to: OpenAPI links, so clients (and schemathesis's stateful
# phase) can follow POST /studies to the operations on the new study.
_ON_CREATED_STUDY = ("get_study", "list_trials", "get_frontier", "get_importances", "stop_study", "resume_study",
                     "delete_study")
_CREATED = {
    "description": "the study is queued; its resource is at `Location`",
    "headers": {"Location": {"description": "path of the new study", "schema": {"type": "string"}}},
    "links": {operation: {"operationId": operation, "parameters": {"study_id": "$response.body#/id"}}
              for operation in _ON_CREATED_STUDY},
}
# the demo study (studies/digits_cnn.yaml, shortened): the docs' example, and a request that the
# contract test sends, so it must stay valid
_EXAMPLE_SPEC: dict[str, Any] = {
    "name": "digits-cnn-demo", "task": "digits-cnn",
    "knobs": [{"kind": "bitwidth", "choices": [2, 4, 8]},
              {"kind": "prune", "method": "structured", "low": 0.0, "high": 0.75, "step": 0.25}],
    "objectives": [{"name": "accuracy"}, {"name": "model_bytes"}],
    "sampler": {"name": "tpe", "options": {"n_startup_trials": 8}},
    "n_trials": 30,
}
_EXAMPLE_YAML = yaml.safe_dump(_EXAMPLE_SPEC, sort_keys=False)
_SPEC_RULES = ("invalid spec: a field breaks the schema, or a rule the schema cannot state (a task, sampler or "
               "objective that is not registered, an option the task or sampler lacks, low above high, ...)")


def _check_transfer(spec: StudySpec, reads: Reads) -> None:
    """422 for sampler sources (``transfer_from``) that are not stored or measure other
    objectives; the layer kinds are checked when a worker has loaded the model."""
    from paretoml.surrogates.transfer import SourceCache, TransferError, check_sources

    names = spec.sampler.options.get("transfer_from") or []
    if not names:
        return
    try:  # a fresh cache: a source still running is read again when the study starts
        check_sources(reads.storage, names, [(o.name, o.resolved_direction) for o in spec.objectives], None,
                      SourceCache())
    except TransferError as exc:
        raise HTTPException(422, [{"loc": ["body", "sampler", "options", "transfer_from"],
                                   "msg": str(exc).removeprefix("transfer_from: "), "type": "value_error"}]) from None


@router.post("/studies", status_code=status.HTTP_202_ACCEPTED, response_model=schemas.StudyCreated,
             dependencies=[Writer], responses={202: _CREATED, **errors(*BODY_ERRORS, 401, 503,
                                                                        descriptions={422: _SPEC_RULES})})
def submit_study(spec: Annotated[StudySpec, Body(openapi_examples={"digits-cnn": {"value": _EXAMPLE_SPEC}})],
                 jobs: Jobs, reads: Reads, response: Response) -> schemas.StudyCreated:
    """Queue a study. The job is stored before this answers; a runner picks it up."""
    _check_transfer(spec, reads)
    job = jobs.submit(spec)
    location = f"/api/v1/studies/{job.id}"
    response.headers["Location"] = location
    return schemas.StudyCreated(id=job.id, status=JobStatus(job.status), location=location)


@router.get("/studies", response_model=schemas.Page[schemas.StudySummary], responses=errors(422, 503))
def list_studies(jobs: Jobs, reads: Reads, status_: Annotated[JobStatus | None, Query(alias="status")] = None,
                 offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Any:
    page = jobs.list(status_, offset, limit)
    return schemas.Page[schemas.StudySummary](items=[reads.summary(job) for job in page.items], total=page.total,
                                              offset=offset, limit=limit)


@router.get("/studies/{study_id}", response_model=schemas.StudyDetail, responses=errors(404, 422, 503))
def get_study(study_id: StudyId, jobs: Jobs, reads: Reads) -> schemas.StudyDetail:
    return reads.detail(jobs.get(study_id))


@router.get("/studies/{study_id}/trials", response_model=schemas.Page[schemas.Trial] | schemas.Page[schemas.TrialBrief],
            responses=errors(404, 422, 503))
def list_trials(
    study_id: StudyId, jobs: Jobs, reads: Reads,
    state: Annotated[schemas.TrialStateName | None, Query(description="only trials in this state")] = None,
    offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    brief: Annotated[bool, Query(description="numbers, states and values only (for charts of many trials)")] = False,
) -> Any:
    """Trials in number order."""
    job = jobs.get(study_id)
    trials = reads.trials(study_id)
    if state is not None:
        trials = [t for t in trials if t.state == STATES_BY_NAME[state]]
    chosen = sorted(trials, key=lambda t: t.number)[offset: offset + limit]
    page: schemas.Page[Any]
    if brief:
        page = schemas.Page[schemas.TrialBrief](items=[reads.brief(job, t) for t in chosen], total=len(trials),
                                                offset=offset, limit=limit)
    else:
        page = schemas.Page[schemas.Trial](items=[reads.trial(job, t) for t in chosen], total=len(trials),
                                           offset=offset, limit=limit)
    # built and checked above already; validating against the union again costs 0.5 s at 10,000
    return Response(page.model_dump_json(), media_type="application/json")


@router.get("/studies/{study_id}/trials/{number}", response_model=schemas.Trial,
            responses=errors(404, 422, 503, descriptions={404: "no study with this id, or no trial with this number"}))
def get_trial(study_id: StudyId, number: Annotated[int, Path(ge=0, le=10_000_000)], jobs: Jobs,
              reads: Reads) -> schemas.Trial:
    found = reads.trial_by_number(jobs.get(study_id), number)
    if found is not None:
        return found
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"study {study_id!r} has no trial {number}")


@router.get("/studies/{study_id}/frontier", response_model=schemas.Frontier,
            responses=errors(404, 422, 503))
def get_frontier(study_id: StudyId, jobs: Jobs, reads: Reads) -> schemas.Frontier:
    """The stored Pareto front (feasible completed trials) and its hypervolume each time it changed."""
    return reads.frontier(jobs.get(study_id))


_WRITE_ERRORS = errors(401, 404, 409, 422, 503)


@router.post("/studies/{study_id}/stop", response_model=schemas.StudySummary, dependencies=[Writer],
             responses=_WRITE_ERRORS)
def stop_study(study_id: StudyId, jobs: Jobs, reads: Reads) -> schemas.StudySummary:
    """A queued study stops at once; a running one finishes its trials in flight (status 'stopping')."""
    jobs.request_stop(study_id)
    return reads.summary(jobs.get(study_id))


@router.post("/studies/{study_id}/resume", response_model=schemas.StudySummary, dependencies=[Writer],
             status_code=status.HTTP_202_ACCEPTED, responses=_WRITE_ERRORS)
def resume_study(study_id: StudyId, jobs: Jobs, reads: Reads) -> schemas.StudySummary:
    """Queue a stopped or failed study again; it continues to its budget with nothing redone."""
    jobs.resume(study_id)
    return reads.summary(jobs.get(study_id))


@router.delete("/studies/{study_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Writer],
               responses=_WRITE_ERRORS)
def delete_study(study_id: StudyId, jobs: Jobs, reads: Reads) -> Response:
    """Delete a study that is not queued or running (stop it first), with all its trials."""
    jobs.delete(study_id)
    reads.delete_study(study_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/specs/validate", response_model=StudySpec,
             responses=errors(*BODY_ERRORS, descriptions={
                 422: "`text` does not parse as its `format` (YAML text sent as `json` included), is not a mapping, "
                      "or " + _SPEC_RULES}))
async def validate_spec(body: Annotated[schemas.SpecText, Body(openapi_examples={
        "yaml": {"value": {"format": "yaml", "text": _EXAMPLE_YAML}},
        "json": {"value": {"format": "json", "text": json.dumps(_EXAMPLE_SPEC)}}})]) -> Any:
    """Parse a spec written as YAML or JSON and validate it, without submitting it."""
    try:
        data = json.loads(body.text) if body.format == "json" else load_yaml(body.text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HTTPException(422, [{"loc": ["body", "text"], "msg": f"not valid {body.format.upper()}: {first}",
                                   "type": "parse_error"}]) from None
    if not isinstance(data, dict):
        raise HTTPException(422, [{"loc": ["body", "text"], "msg": "the spec must be a mapping of fields",
                                   "type": "spec_type"}])
    try:
        return await run_in_threadpool(StudySpec.model_validate, data)
    except ValidationError as exc:
        raise HTTPException(422, [{"loc": ["body", "spec", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                                  for e in exc.errors(include_url=False)]) from None
