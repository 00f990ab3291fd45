"""jobs submitted to the service

Revision ID: 0002_jobs
Revises: 0001_frontier
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_jobs"
down_revision = "0001_frontier"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "paretoml_jobs",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("sampler", sa.String(length=64), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_paretoml_jobs"),
    )
    op.create_index("ix_paretoml_jobs_status", "paretoml_jobs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_paretoml_jobs_status", "paretoml_jobs")
    op.drop_table("paretoml_jobs")
