"""workers: the labels their admin set (authoritative) and those a worker may set itself

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 18:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("admin_labels", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(
            sa.Column("allowed_labels", sa.JSON(), nullable=False, server_default="[]")
        )
    # A worker made before this knew no difference: what it has is taken as its admin's.
    op.execute("UPDATE workers SET admin_labels = labels")


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("allowed_labels")
        batch.drop_column("admin_labels")
