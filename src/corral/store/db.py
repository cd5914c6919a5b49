"""Engines and migrations for SQLite (the default, in the data directory) and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from corral.store import _inline_sqlite

MIGRATIONS = Path(__file__).parent / "migrations"


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'corral.db').resolve()}"


def async_url(url: str) -> str:
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        return u.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def sync_url(url: str) -> str:
    u = make_url(url)
    if u.drivername == "sqlite+aiosqlite":
        return u.set(drivername="sqlite").render_as_string(hide_password=False)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+asyncpg"):
        return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def sqlite_path(url: URL) -> str:
    """The database file of a SQLite URL."""
    if not url.database or url.database == ":memory:":
        raise ValueError(f"{url}: the store needs a SQLite database file")
    return url.database


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers do not block the writer; NORMAL is durable against a killed process.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# pg_advisory_xact_lock key for migrations: any constant that no other program on the same
# database uses ("corral" in ASCII).
_MIGRATION_LOCK = 0x636F7272616C


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (idempotent; safe at every start).

    On PostgreSQL, under an advisory lock held until the migration commits, so that several
    coordinators starting at once on one database migrate it one after the other (the
    others then find it at head) instead of racing to create the same tables."""
    u = make_url(sync_url(url))
    args = (
        _pg_connect_args(Timeouts(statement_s=600)) if u.get_backend_name() == "postgresql" else {}
    )
    engine = create_engine(u, connect_args=args)  # a migration may take long; a dead link not
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Timeouts:
    """How long the coordinator waits on its database before it answers 503 instead.

    Without them a black-holed PostgreSQL link hangs every request for as long as TCP
    takes to give up (minutes)."""

    connect_s: float = 5.0  # to open a connection
    statement_s: float = 30.0  # one statement, enforced by PostgreSQL itself
    idle_in_transaction_s: float = 60.0  # a transaction left open by a stuck client
    pool_s: float = 10.0  # waiting for a pooled connection
    # A link that stops acknowledging: keepalives find an idle one dead, tcp_user_timeout
    # one with data in flight.
    keepalive_idle_s: int = 10
    tcp_user_timeout_s: float = 15.0


def _pg_connect_args(t: Timeouts) -> dict[str, Any]:
    return {
        "connect_timeout": max(1, round(t.connect_s)),
        "keepalives": 1,
        "keepalives_idle": t.keepalive_idle_s,
        "keepalives_interval": max(1, t.keepalive_idle_s // 2),
        "keepalives_count": 3,
        "tcp_user_timeout": int(t.tcp_user_timeout_s * 1000),
        "options": f"-c statement_timeout={int(t.statement_s * 1000)}"
        f" -c idle_in_transaction_session_timeout={int(t.idle_in_transaction_s * 1000)}",
    }


def open_engine(url: str, timeouts: Timeouts | None = None) -> AsyncEngine:
    t = timeouts or Timeouts()
    aurl = async_url(url)
    u = make_url(aurl)
    if u.get_backend_name() == "sqlite":
        # SQLite has one writer: a single pooled connection serialises the coordinator's
        # transactions in-process instead of failing them with "database is locked". Its
        # statements run on the loop's thread (_inline_sqlite says why).
        engine = create_async_engine(
            aurl, poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0,
            pool_timeout=max(t.pool_s, t.statement_s),
            async_creator=_inline_sqlite.connector(sqlite_path(u)),
        )  # fmt: skip
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(aurl, pool_size=10, max_overflow=10, pool_pre_ping=True,
                               pool_timeout=t.pool_s, connect_args=_pg_connect_args(t))  # fmt: skip
