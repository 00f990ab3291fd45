"""The dashboard, served by the API's own FastAPI app under ``/``.

Pages (static HTML and plain JavaScript modules, no build step):

- ``/``: the study list; ``/new``: the new-study form;
- ``/studies/{id}``: a study (Pareto front, history, importances, trials);
- ``/studies/{id}/trials/{number}``: one trial.

The pages read everything from the public REST API (``/api/v1``), as any client would.
Figures are drawn by :mod:`paretoml.dashboard.figures`; ``/ui/api/.../figures`` serves
them as plotly JSON, built from the documents the REST API returns for the same study,
read through the same :class:`~paretoml.service.api.reads.StudyReads`.
plotly.js comes from the installed ``plotly`` package, never from a CDN.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections import Counter, OrderedDict
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import jinja2

import plotly
from fastapi import APIRouter, FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from optuna.trial import TrialState
from starlette.types import Scope

from paretoml.dashboard import figures
from paretoml.service.api.deps import Jobs, Reads
from paretoml.service.api.reads import StudyReads
from paretoml.service.db.models import Job

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
PLOTLY_URL = f"/ui/plotly-{plotly.__version__}.min.js"
SETTLED = {"completed", "stopped", "failed"}  # job statuses in which no trial runs

StudyId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
TrialNumber = Annotated[int, PathParam(ge=0, le=10_000_000)]

router = APIRouter(include_in_schema=False)


class _RevalidatedStatic(StaticFiles):
    """Static files that the browser keeps but checks (ETag) on every load."""

    def file_response(self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard's pages, assets and figure routes to the API's app."""
    app.include_router(router)
    app.mount("/ui/static", _RevalidatedStatic(directory=STATIC), name="dashboard-static")
    # plotly builds its figure classes lazily (half a second, once); do it before a user waits
    threading.Thread(target=_warm_up, name="paretoml-dashboard-warmup", daemon=True).start()


def _warm_up() -> None:
    figures.pareto_figure([{"name": "a", "direction": "minimize"}, {"name": "b", "direction": "maximize"}],
                          [{"number": 0, "state": "complete", "values": {"a": 1.0, "b": 1.0}, "feasible": True}],
                          {"points": []}).to_json()
    _plotly_gzip()


# -- pages -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _asset_version() -> str:
    digest = hashlib.sha1()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    """Pages extend ``base.html``; every value is HTML-escaped (autoescape)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined)


def _page(request: Request, name: str, **values: str) -> HTMLResponse:
    settings = request.app.state.settings
    text = _templates().get_template(name).render(
        auth="required" if settings.token else "none", plotly=PLOTLY_URL, v=_asset_version(), **values)
    return HTMLResponse(text, headers={"Cache-Control": "no-cache"})


@router.get("/", response_class=HTMLResponse)
def study_list_page(request: Request) -> HTMLResponse:
    return _page(request, "list.html")


@router.get("/new", response_class=HTMLResponse)
def new_study_page(request: Request) -> HTMLResponse:
    return _page(request, "new.html")


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(request: Request, study_id: StudyId) -> HTMLResponse:
    return _page(request, "study.html", study=study_id)


@router.get("/studies/{study_id}/trials/{number}", response_class=HTMLResponse)
def trial_page(request: Request, study_id: StudyId, number: TrialNumber) -> HTMLResponse:
    return _page(request, "trial.html", study=study_id, trial=str(number))


# -- plotly.js from the installed package ---------------------------------------------------
@lru_cache(maxsize=1)
def _plotly_gzip() -> bytes:
    return gzip.compress(PLOTLY_JS.read_bytes(), compresslevel=6, mtime=0)


@router.get(PLOTLY_URL)
def plotly_js(request: Request) -> Response:
    headers = {"Cache-Control": "public, max-age=31536000, immutable", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(_plotly_gzip(), media_type="text/javascript",
                        headers={**headers, "Content-Encoding": "gzip"})
    return Response(PLOTLY_JS.read_bytes(), media_type="text/javascript", headers=headers)


# -- example specs ---------------------------------------------------------------------------
def _example_specs() -> list[tuple[str, str]]:
    """(file name, text) of the example specs: the ones installed with the package
    (``paretoml.studies``, package data), else a source checkout's ``studies/``."""
    try:
        folder: Any = resources.files("paretoml.studies")
        found = [(p.name, p.read_text()) for p in folder.iterdir() if p.name.endswith(".yaml")]
    except (ModuleNotFoundError, TypeError, OSError):  # e.g. an editable install's odd namespace path
        found = []
    if not found and (HERE.parent / "studies").is_dir():
        found = [(p.name, p.read_text()) for p in (HERE.parent / "studies").glob("*.yaml")]
    return sorted(found)


@router.get("/ui/api/examples")
def examples() -> list[dict[str, str]]:
    """The example specs of ``studies/``, for the new-study form."""
    return [{"name": name, "text": text} for name, text in _example_specs()]


# -- figures ---------------------------------------------------------------------------------
def _documents(job: Job, reads: StudyReads) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The study's completed trials (brief) and its frontier, the documents the REST API
    returns for them (read through StudyReads, as the API's handlers do)."""
    trials = [brief.model_dump(mode="json") for brief in reads.briefs(job, TrialState.COMPLETE)]
    return trials, reads.frontier(job).model_dump(mode="json")


def _figures_json(named: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    parts = [f"{json.dumps(k)}:{fig.to_json(validate=False)}" for k, fig in named.items()]
    parts += [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in (extra or {}).items()]
    return "{" + ",".join(parts) + "}"


def _json_response(text: str) -> Response:
    return Response(text, media_type="application/json", headers={"Cache-Control": "no-store"})


def _json_figures(named: dict[str, Any], extra: dict[str, Any] | None = None) -> Response:
    return _json_response(_figures_json(named, extra))


class _FigureCache:
    """The last figures of a few studies that are not running (completed, stopped, failed),
    keyed by the count of trials in each state, so a resumed study misses the cache."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> str | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: tuple[Any, ...], text: str) -> None:
        with self._lock:
            self._items[key] = text
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_cache = _FigureCache()


def _fingerprint(study_id: str, reads: Any) -> tuple[Any, ...]:
    states = Counter(t.state for t in reads.trials(study_id))
    return tuple(sorted((state.name, count) for state, count in states.items()))


@router.get("/ui/api/studies/{study_id}/figures")
def study_figures(study_id: StudyId, jobs: Jobs, reads: Reads,
                  include: Annotated[str, Query(pattern=r"^(pareto|history)(,(pareto|history))*$")] = "pareto,history",
                  axes: Annotated[str | None, Query(max_length=400, description="comma-separated objectives")] = None,
                  ) -> Response:
    """The Pareto-front and history figures of a study, as plotly JSON."""
    job = jobs.get(study_id)  # 404 for a study that does not exist
    settled = str(getattr(job.status, "value", job.status)) in SETTLED
    key = (reads.url, study_id, str(job.created_at), include, axes, _fingerprint(study_id, reads))
    cached = _cache.get(key) if settled else None
    if cached is not None:
        return _json_response(cached)
    trials, frontier = _documents(job, reads)
    objectives = frontier["objectives"]
    named: dict[str, Any] = {}
    wanted = include.split(",")
    try:
        if "pareto" in wanted:
            named["pareto"] = figures.pareto_figure(objectives, trials, frontier,
                                                    axes.split(",") if axes else None)
    except figures.FigureError as exc:
        raise HTTPException(422, str(exc)) from None
    if "history" in wanted:
        named["history"] = figures.history_figure(objectives, trials, frontier)
    text = _figures_json(named, {"n_complete": len(trials), "front_size": len(frontier["points"])})
    if settled and _fingerprint(study_id, reads) == key[-1]:
        _cache.put(key, text)
    return _json_response(text)


@router.get("/ui/api/studies/{study_id}/figures/importances")
def importance_figure(study_id: StudyId, jobs: Jobs, reads: Reads) -> Response:
    document = reads.importances(jobs.get(study_id)).model_dump(mode="json")
    return _json_figures({"importances": figures.importance_figure(document)}, {"document": document})


_layers: OrderedDict[tuple[str, str, str], list[dict[str, Any]]] = OrderedDict()
_layers_lock = threading.Lock()


def _study_layers(study_id: str, jobs: Any, reads: Any) -> list[dict[str, Any]]:
    """``StudyDetail.layers``, kept per study: a study's model does not change, and the
    detail document costs a pass over all its trials."""
    job = jobs.get(study_id)
    key = (reads.url, study_id, str(job.created_at))
    with _layers_lock:
        if key in _layers:
            return _layers[key]
    layers = reads.detail(job).model_dump(mode="json")["layers"]
    if layers:  # written when the study's runner first starts
        with _layers_lock:
            _layers[key] = layers
            while len(_layers) > 64:
                _layers.popitem(last=False)
    return layers


@router.get("/ui/api/studies/{study_id}/trials/{number}/figures/layers")
def layer_figure(study_id: StudyId, number: TrialNumber, jobs: Jobs, reads: Reads) -> Response:
    found = reads.trial_by_number(jobs.get(study_id), number)
    if found is None:
        raise HTTPException(404, f"study {study_id!r} has no trial {number}")
    trial = found.model_dump(mode="json")
    return _json_figures({"layers": figures.layer_config_figure(_study_layers(study_id, jobs, reads), trial),
                          "curve": figures.rung_curve_figure(trial)})


@router.get("/ui/api/meta")
def meta(request: Request) -> JSONResponse:
    """What the pages need to know about this server: whether writes need a token."""
    return JSONResponse({"auth_required": request.app.state.settings.token is not None})
