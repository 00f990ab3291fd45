"""frontier points and snapshots

Revision ID: 0001_frontier
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_frontier"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "paretoml_frontier_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(length=512), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_paretoml_frontier_points"),
        sa.UniqueConstraint("study_name", "trial_number", name="uq_frontier_point"),
    )
    op.create_index("ix_paretoml_frontier_points_study_name", "paretoml_frontier_points", ["study_name"])
    op.create_table(
        "paretoml_frontier_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(length=512), nullable=False),
        sa.Column("n_complete", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("front_size", sa.Integer(), nullable=False),
        sa.Column("hypervolume", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_paretoml_frontier_snapshots"),
    )
    op.create_index("ix_paretoml_frontier_snapshots_study_name", "paretoml_frontier_snapshots", ["study_name"])


def downgrade() -> None:
    op.drop_index("ix_paretoml_frontier_snapshots_study_name", "paretoml_frontier_snapshots")
    op.drop_table("paretoml_frontier_snapshots")
    op.drop_index("ix_paretoml_frontier_points_study_name", "paretoml_frontier_points")
    op.drop_table("paretoml_frontier_points")
