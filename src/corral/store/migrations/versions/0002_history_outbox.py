"""history of every state change; the worker outbox under its own name; request hashes;
a row that readiness probes write; what a job's capped log holds; why a worker takes no work

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("worker_id", sa.String(length=40), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=True),
        sa.Column("reason", sa.String(length=50), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("cause", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_history")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_history_job", "history", ["job_id", "id"])
    op.create_index("ix_history_worker", "history", ["worker_id", "id"])
    op.create_index("ix_history_at", "history", ["at"])
    # "events" now means the history; the stream's outbox says what it is.
    op.drop_index("ix_worker_events_worker_id", table_name="worker_events")
    op.rename_table("worker_events", "outbox")
    op.create_index("ix_outbox_worker_id", "outbox", ["worker_id", "id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("log_bytes", sa.BigInteger(), server_default="0",
                                   nullable=False))  # fmt: skip
        batch.add_column(sa.Column("log_cut_after", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("log_cut_bytes", sa.BigInteger(), server_default="0",
                                   nullable=False))  # fmt: skip
    with op.batch_alter_table("log_chunks") as batch:
        batch.add_column(sa.Column("size", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("constrained", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("heard_ns", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("reported_ns", sa.BigInteger(), nullable=True))
    probes = op.create_table(
        "probes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probes")),
    )
    op.bulk_insert(probes, [{"id": "readyz", "at": None}])
    # BUSY is shown, no longer stored: an idle worker holding attempts is busy.
    op.execute("UPDATE workers SET status = 'idle' WHERE status = 'busy'")


def downgrade() -> None:
    op.drop_table("probes")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("reported_ns")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("heard_ns")
        batch.drop_column("constrained")
    with op.batch_alter_table("log_chunks") as batch:
        batch.drop_column("size")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("log_cut_bytes")
        batch.drop_column("log_cut_after")
        batch.drop_column("log_bytes")
        batch.drop_column("request_hash")
    op.drop_index("ix_outbox_worker_id", table_name="outbox")
    op.rename_table("outbox", "worker_events")
    op.create_index("ix_worker_events_worker_id", "worker_events", ["worker_id", "id"])
    op.drop_index("ix_history_at", table_name="history")
    op.drop_index("ix_history_worker", table_name="history")
    op.drop_index("ix_history_job", table_name="history")
    op.drop_table("history")
