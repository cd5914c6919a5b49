"""What a job's code reported (corral.sdk.report): one row a metric a step, per attempt, and a
count per job against its cap; the requirements of the Python environment a job runs in,
its parameters, and the globs of its declared outputs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 16:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("metric_points", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("requirements", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("outputs", sa.JSON(), nullable=True))
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_metrics_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_metrics_job_id", "metrics", ["job_id", "name", "id"])


def downgrade() -> None:
    op.drop_index("ix_metrics_job_id", table_name="metrics")
    op.drop_table("metrics")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("outputs")
        batch.drop_column("params")
        batch.drop_column("requirements")
        batch.drop_column("metric_points")
