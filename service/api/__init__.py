"""The REST API: ``create_app(settings)`` builds the FastAPI application.

``create_app`` is imported on first use, so that a module the app itself imports (the
dashboard's routes, the API's schemas) can be imported on its own without a cycle."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from paretoml.service.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
