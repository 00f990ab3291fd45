"""Service settings, read from ``PARETOML_*`` environment variables or a ``.env`` file.

Only ``paretoml serve`` and the API read these; the CLI's ``run``/``resume`` take flags.
"""

from __future__ import annotations


from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK = "127.0.0.1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARETOML_", env_file=".env", extra="ignore")

    database_url: str = Field("sqlite:///paretoml.db", description="SQLAlchemy URL of the study database")
    ray_address: str | None = Field(None, description="join this Ray cluster ('auto', 'ray://host:10001'); "
                                                       "default: a local Ray runtime")
    api_token: SecretStr | None = Field(None, description="bearer token required by every writing endpoint")
    host: str = Field(LOOPBACK, description="address to bind; without an api_token only loopback is allowed")
    port: int = Field(8000, ge=0, le=65535)
    study_concurrency: int = Field(1, ge=0, le=64,
                                   description="studies run at once by this server (0: accept jobs, run none)")
    workers_per_study: int = Field(1, ge=1, le=256, description="Ray workers (trials in flight) per study")
    worker_cpus: float = Field(1.0, gt=0, description="CPUs each Ray worker reserves")
    worker_gpus: float = Field(0.0, ge=0, description="GPUs each Ray worker reserves")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted")
    job_heartbeat_s: float = Field(2.0, gt=0, description="how often a running job's server says it is alive")
    job_grace_s: float = Field(8.0, gt=0, description="a running job silent this long is taken over")

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None
