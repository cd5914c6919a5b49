"""What placement needs: a job's counted resources (cpus, memory) and its other requirements,
the GPUs each attempt holds (chosen by the coordinator), what a worker's machine is,
whether a worker is paused, a coordinator's own or shared by every tenant, a tenant's quotas, gangs (multi-node
jobs), and preemption

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 19:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("max_running_jobs", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_gpus", sa.Integer(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cpus", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("memory_gb", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("requires", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("gpu_ids", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("nodes", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("gang_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("rank", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rendezvous", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("preemptible", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("preemptions", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_jobs_gang", "jobs", ["gang_id"])
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("gpu_ids", sa.JSON(), nullable=True))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("cpu_model", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("address", sa.String(length=100), nullable=True))
        batch.add_column(
            sa.Column("accelerator", sa.String(length=10), nullable=False, server_default="cpu")
        )
        batch.add_column(sa.Column("memory_buffer", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("local", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        for name in (
            "shared",
            "local",
            "paused_at",
            "memory_buffer",
            "accelerator",
            "address",
            "cpu_model",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("gpu_ids")
    op.drop_index("ix_jobs_gang", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in ("preemptions", "preemptible", "rendezvous", "rank", "gang_id", "nodes",
                     "gpu_ids", "requires", "memory_gb", "cpus"):  # fmt: skip
            batch.drop_column(name)
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("max_gpus")
        batch.drop_column("max_running_jobs")
