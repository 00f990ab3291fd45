"""The application factory. One app per settings object; the lifespan migrates the
database, then starts the job scheduler (and stops it, gracefully, on shutdown).

A UI is installed into the app, not imported by it: ``create_app(ui=[...])`` takes the
functions that add one, and by default the installed ones are found under the entry point
group ``paretoml.ui`` (the dashboard registers itself there in ``pyproject.toml``), so the
service floor never imports the dashboard that reads through it."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import entry_points

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi_offline import FastAPIOffline

from paretoml.service.api.errors import install_error_handlers
from paretoml.service.api.limits import BodySizeLimit
from paretoml.service.api.openapi import describe_auth, operation_id
from paretoml.service.api.reads import StudyReads
from paretoml.service.api.routes import analysis, catalog, export, health, studies
from paretoml.service.db.session import engine_for
from paretoml.service.jobs import JobRepository
from paretoml.service.scheduler import JobScheduler
from paretoml.service.settings import Settings

API_PREFIX = "/api/v1"
# the routers of the REST API, all under API_PREFIX (tests/service/api/test_openapi.py checks
# that each of their operations declares the errors it can send)
API_ROUTERS = (studies.router, analysis.router, catalog.router, health.router, export.router)
#: Entry point group of the UIs installed into the app: each names a ``UiInstaller``.
UI_ENTRY_POINT_GROUP = "paretoml.ui"
#: Adds a UI's routes and assets to the app.
UiInstaller = Callable[[FastAPI], None]


def installed_uis() -> list[UiInstaller]:
    """The UIs installed with ParetoML (``paretoml.ui`` entry points), by name."""
    return [ep.load() for ep in sorted(entry_points(group=UI_ENTRY_POINT_GROUP), key=lambda ep: ep.name)]


def _server_signal_handlers() -> dict[signal.Signals, object]:
    if threading.current_thread() is not threading.main_thread():
        return {}  # handlers can only be set from the main thread (a TestClient runs elsewhere)
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


async def _restore_signals_after_ray(scheduler: JobScheduler, saved: dict[signal.Signals, object]) -> None:
    """Once the scheduler has started Ray, give SIGTERM/SIGINT back to the server.

    A Ray that sets its own handlers for them would end the process at once, skipping the
    graceful shutdown that hands running studies back to the queue and ends Ray's agents.
    ``start_ray`` keeps Ray's core worker from taking SIGTERM; this covers a Ray that still
    does (it warns then), and ``ray.init``'s Python handler, set when it runs on the main thread.
    """
    if not saved:
        return
    while not scheduler.ray_ready.is_set():
        await asyncio.sleep(0.1)
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)  # type: ignore[arg-type]


def create_app(settings: Settings | None = None, ui: Sequence[UiInstaller] | None = None) -> FastAPI:
    """The API's app; ``ui`` installs the pages served beside it (default: the installed UIs,
    see :func:`installed_uis`; ``[]`` serves the API alone)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine_for(settings.database_url)  # runs the migrations once
        app.state.jobs = JobRepository(settings.database_url)
        app.state.reads = StudyReads(settings.database_url, app.state.jobs)
        app.state.scheduler = scheduler = JobScheduler(settings)
        saved = _server_signal_handlers()
        scheduler.start()
        restore = asyncio.create_task(_restore_signals_after_ray(scheduler, saved)) if settings.study_concurrency else None
        # the first read of a big study loads all its trials; do it before anyone asks
        threading.Thread(target=app.state.reads.warm, name="paretoml-warm-reads", daemon=True).start()
        try:
            yield
        finally:
            if restore is not None:
                restore.cancel()
            await run_in_threadpool(scheduler.shutdown)

    # FastAPIOffline: FastAPI whose /docs (Swagger UI 5) and /redoc load their scripts from the
    # installed fastapi-offline package, not from a CDN, so the docs work offline
    app = FastAPIOffline(title="ParetoML", version="1", lifespan=lifespan, docs_url="/docs", redoc_url="/redoc",
                         static_url="/docs-static", favicon_url="/ui/static/favicon.svg",
                         description="Multi-objective search over model compression and hyperparameters.",
                         generate_unique_id_function=operation_id)
    app.state.settings = settings
    describe_auth(app, settings)
    install_error_handlers(app)
    for router in API_ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    for install in installed_uis() if ui is None else ui:
        install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
