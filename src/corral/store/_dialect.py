"""The one place where SQLite and PostgreSQL differ in what we write."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def insert_ignore(conn: AsyncConnection, table: Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING, for idempotent writes."""
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    return mod.insert(table).on_conflict_do_nothing()


def one_writer(conn: AsyncConnection) -> bool:
    """True where transactions never overlap (SQLite: one pooled connection), so row locks
    and re-reads against a concurrent commit are needless statements."""
    return conn.dialect.name == "sqlite"
