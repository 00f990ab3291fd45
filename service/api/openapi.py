"""What the OpenAPI document says beyond what FastAPI derives from the routes.

- Operation ids are the routes' function names (``get_study``), so OpenAPI links and client
  generators can name operations without FastAPI's path-derived ids.
- A server without an API token lets anyone write: its document then says the bearer token
  is optional (an empty security requirement beside ``HTTPBearer``), as the server behaves.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from paretoml.service.settings import Settings


def operation_id(route: APIRoute) -> str:
    return route.name


def describe_auth(app: FastAPI, settings: Settings) -> None:
    """Mark the bearer token optional in the document of a server that has none."""
    derive = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = derive()  # FastAPI's, cached on the app
            if settings.token is None:
                for operations in document.get("paths", {}).values():
                    for operation in operations.values():
                        if operation.get("security") and {} not in operation["security"]:
                            operation["security"].append({})
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
