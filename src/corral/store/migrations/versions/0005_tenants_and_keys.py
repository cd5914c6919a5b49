"""tenants that can be suspended; API keys with a prefix, an expiry and a last use;
the keys that sign API tokens; the source address of each history entry

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 20:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("status", sa.String(20), nullable=False, server_default="active")
        )
        batch.add_column(sa.Column("suspended_at", sa.DateTime(timezone=True)))
        batch.create_unique_constraint("uq_tenants_name", ["name"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("prefix", sa.String(20)))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True)))
        batch.create_unique_constraint("uq_api_keys_tenant_name", ["tenant_id", "name"])
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_keys")),
    )
    with op.batch_alter_table("history") as batch:
        batch.add_column(sa.Column("source", sa.String(100)))
    # The key a first start printed and the bootstrap key were the fleet's whole authority:
    # they are the operator's now, the only role that onboards and suspends tenants.
    op.execute(
        "UPDATE api_keys SET role = 'operator' WHERE tenant_id = 'default'"
        " AND name IN ('admin', 'bootstrap admin')"
    )


def downgrade() -> None:
    with op.batch_alter_table("history") as batch:
        batch.drop_column("source")
    op.drop_table("signing_keys")
    op.execute("UPDATE api_keys SET role = 'admin' WHERE role = 'operator'")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("uq_api_keys_tenant_name", type_="unique")
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
        batch.drop_column("prefix")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_constraint("uq_tenants_name", type_="unique")
        batch.drop_column("suspended_at")
        batch.drop_column("status")
