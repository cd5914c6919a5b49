"""workers enrolled with a certificate (the certificate and its end); single-use
registration tokens; the nonces of signed worker requests

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("cert_pem", sa.Text()))
        batch.add_column(sa.Column("cert_expires_at", sa.DateTime(timezone=True)))
    op.create_table(
        "registrations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(40)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_registrations_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registrations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_registrations_token_hash")),
    )
    op.create_index("ix_registrations_expires", "registrations", ["expires_at"])
    op.create_table(
        "worker_nonces",
        sa.Column("worker_id", sa.String(40), nullable=False),
        sa.Column("nonce", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", "nonce", name=op.f("pk_worker_nonces")),
    )
    op.create_index("ix_worker_nonces_expires", "worker_nonces", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_worker_nonces_expires", table_name="worker_nonces")
    op.drop_table("worker_nonces")
    op.drop_index("ix_registrations_expires", table_name="registrations")
    op.drop_table("registrations")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("cert_expires_at")
        batch.drop_column("cert_pem")
