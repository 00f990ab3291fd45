"""The application factory. One app per settings object; the lifespan migrates the
database, then starts the job scheduler (and stops it, gracefully, on shutdown)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from paretoml.service.api.errors import install_error_handlers
from paretoml.service.api.limits import BodySizeLimit
from paretoml.service.api.reads import StudyReads
from paretoml.dashboard.routes import install_dashboard
from paretoml.service.api.routes import analysis, catalog, health, studies
from paretoml.service.db.session import engine_for
from paretoml.service.jobs import JobRepository
from paretoml.service.scheduler import JobScheduler
from paretoml.service.settings import Settings

API_PREFIX = "/api/v1"


async def _start_ray(scheduler: JobScheduler) -> None:
    """Start Ray in the background, then give SIGTERM/SIGINT back to the server.

    Ray's core worker installs its own handlers for them, which would end the process at
    once, skipping the graceful shutdown that hands running studies back to the queue.
    """
    in_main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    await run_in_threadpool(scheduler.ensure_ray)
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine_for(settings.database_url)  # runs the migrations once
        app.state.jobs = JobRepository(settings.database_url)
        app.state.reads = StudyReads(settings.database_url, app.state.jobs)
        app.state.scheduler = scheduler = JobScheduler(settings)
        scheduler.start()
        ray_start = asyncio.create_task(_start_ray(scheduler)) if settings.study_concurrency else None
        try:
            yield
        finally:
            if ray_start is not None and not ray_start.done():
                await ray_start
            await run_in_threadpool(scheduler.shutdown)

    app = FastAPI(title="ParetoML", version="1", lifespan=lifespan, docs_url="/docs",
                  description="Multi-objective search over model compression and hyperparameters.")
    app.state.settings = settings
    install_error_handlers(app)
    for router in (studies.router, analysis.router, catalog.router, health.router):
        app.include_router(router, prefix=API_PREFIX)
    install_dashboard(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
