"""Typed ORM models of ParetoML's own tables. Optuna's tables hold the trials; these hold
what the service derives from them. Every name is prefixed so the two never collide."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class FrontierPoint(Base):
    """One trial on a study's current Pareto front (feasible, completed trials only)."""

    __tablename__ = "paretoml_frontier_points"
    __table_args__ = (UniqueConstraint("study_name", "trial_number", name="uq_frontier_point"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(512), index=True)
    trial_number: Mapped[int] = mapped_column(Integer)
    values: Mapped[list[float]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FrontierSnapshot(Base):
    """The front's size and hypervolume each time it changed: its history."""

    __tablename__ = "paretoml_frontier_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(512), index=True)
    n_complete: Mapped[int] = mapped_column(Integer)
    trial_number: Mapped[int] = mapped_column(Integer)
    front_size: Mapped[int] = mapped_column(Integer)
    hypervolume: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """A submitted search job. Its id is also the Optuna study's name.

    ``heartbeat_at`` is refreshed by the server running the job; a running job whose
    heartbeat is older than the grace period lost its server and is queued again.
    """

    __tablename__ = "paretoml_jobs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    n_trials: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(128))
    sampler: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: "api" jobs are run by a server (and taken over if it dies); "cli" ones by `paretoml run`
    source: Mapped[str] = mapped_column(String(8), default="api")
    runs: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
