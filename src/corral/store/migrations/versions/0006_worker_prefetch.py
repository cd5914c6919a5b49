"""workers: how many call tasks each holds beyond its slots, waiting for one; jobs: an
index that finds the queued calls such a worker may take

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 06:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("prefetch", sa.Integer(), nullable=False, server_default="0"))
    op.create_index(
        "ix_jobs_queue_kind", "jobs", ["state", "kind", "gpus", "priority", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_queue_kind", table_name="jobs")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("prefetch")
