"""Request and response bodies of the API (pydantic), as the OpenAPI document shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from paretoml.service.jobs import JobStatus, as_utc

T = TypeVar("T")


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]

TrialStateName = Literal["complete", "running", "fail", "pruned", "waiting"]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(_Out, Generic[T]):
    items: list[T]
    total: int = Field(description="items matching the filter, over all pages")
    offset: int
    limit: int


class StudyCreated(_Out):
    id: str
    status: JobStatus
    location: str = Field(description="path of the study's resource")


class Progress(_Out):
    budget: int = Field(description="completed trials the study runs to (n_trials)")
    complete: int
    running: int
    failed: int
    pruned: int
    waiting: int = Field(description="queued trials (baselines, warm starts, retries) not yet started")
    fraction: float = Field(description="complete / budget")


class Objective(_Out):
    name: str
    direction: Literal["minimize", "maximize"]


class BestValue(_Out):
    objective: str
    value: float
    trial_number: int


class Timings(_Out):
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    elapsed_s: float | None = Field(description="from the first start to the end (or now, while running)")
    mean_trial_s: float | None = Field(description="mean duration of the completed trials")


class StudySummary(_Out):
    id: str
    status: JobStatus
    task: str
    sampler: str
    objectives: list[Objective]
    progress: Progress
    best: list[BestValue] = Field(description="per objective, the best feasible completed trial")
    created_at: UtcDatetime
    error: str | None
    source: str = Field(
        "api", description="who runs it: this server (api), `paretoml run` (cli), or `paretoml.search` (python: "
                           "listed read-only here; resume and export it from Python)")


class Layer(_Out):
    name: str
    kind: str = Field(description="conv, linear, ...")
    module_type: str
    weight_shape: list[int]
    num_params: int
    macs: int = Field(description="multiply-accumulates per sample")
    out_channels: int


class StudyDetail(StudySummary):
    spec: dict[str, Any]
    timings: Timings
    runs: int = Field(description="how many times a server has started (or resumed) this job")
    front_size: int
    hypervolume: float | None
    layers: list[Layer] = Field(description="the model's layers, in order, as introspected")
    reference: dict[str, Any] = Field(description="objectives of the uncompressed model")


class Provenance(_Out):
    how: str = Field(description="'measured' or 'estimated'")
    detail: Any = None


class Trial(_Out):
    number: int
    state: TrialStateName
    values: dict[str, float] | None
    feasible: bool
    constraints: list[float]
    params: dict[str, Any]
    config: dict[str, Any] | None = Field(description="per-layer bits / prune / merge and the other knobs")
    objectives_how: dict[str, Provenance] = Field(description="how each objective was obtained")
    note: str | None = Field(description="baseline, warm start or retry, when the trial was enqueued")
    worker: dict[str, Any] | None
    error: str | None
    started_at: UtcDatetime | None
    completed_at: UtcDatetime | None
    duration_s: float | None
    intermediate_values: dict[int, float] = Field(
        default_factory=dict, description="Optuna's intermediate values: rung step -> the rung metric")
    rungs: dict[int, dict[str, float]] = Field(
        default_factory=dict, description="rung step -> every objective measurable at that rung")
    stopped_at: int | None = Field(None, description="the rung step at which the pruner stopped the trial (PRUNED)")
    rung_unit: str | None = Field(
        None, description="what a rung step counts: 'fine-tune step' or 'validation samples' (scored prefix)")


class TrialBrief(_Out):
    """A trial without its parameters and per-layer config: what charts need, for many trials."""

    number: int
    state: TrialStateName
    values: dict[str, float] | None
    feasible: bool
    duration_s: float | None


class FrontierPoint(_Out):
    trial_number: int
    values: dict[str, float]


class FrontierSnapshot(_Out):
    n_complete: int = Field(description="completed trials when the front changed")
    trial_number: int
    front_size: int
    hypervolume: float | None
    created_at: UtcDatetime


class Frontier(_Out):
    objectives: list[Objective]
    points: list[FrontierPoint]
    history: list[FrontierSnapshot]
    reference_point: dict[str, float] | None = Field(
        description="hypervolume reference: 0 for maximised objectives, twice the uncompressed model's value otherwise")


class TaskInfo(_Out):
    name: str
    summary: str
    options_schema: dict[str, Any]
    extra: str | None = Field(None, description="the optional extra the task needs (pip install 'paretoml[EXTRA]')")
    installed: bool = Field(True, description="whether the packages the task needs are installed on the server")


class SamplerInfo(_Out):
    name: str
    summary: str
    constraint_aware: bool
    options_schema: dict[str, Any]


class Health(_Out):
    status: Literal["ok"]
    version: str
    database: str
    ray: str = Field(pattern=r"^(ok|starting|off|down: .+)$", examples=["ok", "down: FileNotFoundError: ..."],
                     description="this server's Ray runtime: 'ok'; 'starting' (first attempt under way); "
                                 "'down: <reason>' (the last start failed; retried with back-off; queued "
                                 "studies wait); 'off' (study_concurrency 0: this server runs no studies)")
    studies_running_here: int
    queued: int


class SpecText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=200_000, description="a study spec as YAML or JSON")
    format: Literal["yaml", "json"] = "yaml"


class FieldError(BaseModel):
    """One invalid input: where it is (``["body", "n_trials"]``), what is wrong, and its kind."""

    model_config = ConfigDict(extra="allow")  # FastAPI adds "input" and "ctx" to some

    loc: list[str | int] = Field(description="where the error is: 'body', 'query', 'path' or 'header', then fields")
    msg: str
    type: str


class ApiError(_Out):
    """Every error answer (4xx, 5xx) of the API: what went wrong, for a person to read.

    A string, or for invalid input (422) one entry per invalid field."""

    detail: str | list[FieldError]


Message = ApiError  # the name routes used before the error model was shared
