"""Service settings, read from ``PARETOML_*`` environment variables or a ``.env`` file.

Only ``paretoml serve`` and the API read these; the CLI's ``run``/``resume`` take flags.
Paths are made absolute when the settings are read (at start), so the server never needs
its working directory again.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from paretoml.objectives.threads import DEFAULT_THREADS, MAX_THREADS

LOOPBACK = "127.0.0.1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARETOML_", env_file=".env", extra="ignore")

    database_url: str = Field("sqlite:///paretoml.db", validate_default=True,
                              description="SQLAlchemy URL of the study database (a relative SQLite file is "
                                          "taken from the working directory at start)")
    ray_address: str | None = Field(None, description="join this Ray cluster ('auto', 'ray://host:10001'); "
                                                       "default: a local Ray runtime")
    ray_temp_dir: str | None = Field(None, description="root of the local Ray runtime's session files and sockets "
                                                        "(keep it short: socket paths are limited to 107 bytes); "
                                                        "default: Ray's own (/tmp/ray)")
    ray_retry_base_s: float = Field(1.0, gt=0, description="wait after the first failed Ray start; doubled after "
                                                           "each further failure")
    ray_retry_max_s: float = Field(60.0, gt=0, description="longest wait between two Ray starts")
    api_token: SecretStr | None = Field(None, description="bearer token required by every writing endpoint")
    host: str = Field(LOOPBACK, description="address to bind; without an api_token only loopback is allowed")
    port: int = Field(8000, ge=0, le=65535)
    study_concurrency: int = Field(1, ge=0, le=64,
                                   description="studies run at once by this server (0: accept jobs, run none)")
    workers_per_study: int = Field(1, ge=1, le=256, description="Ray workers (trials in flight) per study")
    worker_cpus: float = Field(1.0, gt=0, description="CPUs each Ray worker reserves")
    worker_gpus: float | Literal["auto"] = Field(
        "auto", description="GPUs each Ray worker reserves: a fraction shares a GPU (0.25: four workers on one); "
                            "'auto' shares the cluster's GPUs evenly when a study measures on CUDA, none otherwise")

    @field_validator("worker_gpus")
    @classmethod
    def _gpu_request(cls, value: float | str) -> float | str:
        if value != "auto" and float(value) < 0:
            raise ValueError("must be 'auto' or a number of GPUs >= 0")
        return value
    threads: int = Field(DEFAULT_THREADS, ge=1, le=MAX_THREADS,
                         description="threads of the server's own process, which samples for every study; each Ray "
                                     "worker gets its worker_cpus share unless the spec's threads.worker says otherwise")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted")
    job_heartbeat_s: float = Field(2.0, gt=0, description="how often a running job's server says it is alive")
    job_grace_s: float = Field(8.0, gt=0, description="a running job silent this long is taken over")

    @field_validator("database_url")
    @classmethod
    def _absolute_sqlite_file(cls, url: str) -> str:
        return absolute_sqlite_url(url)

    @field_validator("ray_temp_dir")
    @classmethod
    def _absolute_temp_dir(cls, path: str | None) -> str | None:
        return os.path.abspath(os.path.expanduser(path)) if path else None

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None


def absolute_sqlite_url(url: str) -> str:
    """``sqlite:///studies.db`` -> ``sqlite:////abs/cwd/studies.db``; any other URL as given."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # not a URL: the storage names the problem when it opens it
    database = parsed.database
    if (parsed.get_backend_name() != "sqlite" or not database or database == ":memory:"
            or database.startswith("file:") or os.path.isabs(database)):
        return url
    return parsed.set(database=os.path.abspath(database)).render_as_string(hide_password=False)
