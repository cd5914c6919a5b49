"""Template databases migrated once and cloned per test, so that Alembic runs once per state
of the migrations rather than once per test.

A template is named by a hash of ``corral/store/migrations/**`` and kept between sessions (a
cache: delete it freely); editing a migration names a new one. Building is serialised
across xdist workers and concurrent sessions (a file lock for SQLite, an advisory lock for
PostgreSQL) and done under a temporary name, so a build that dies halfway is never used.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from filelock import FileLock

from corral.store.db import MIGRATIONS, migrate

_cache_dir: Path | None = None


def use_cache_dir(path: Path) -> None:
    """Where the SQLite template lives (the conftest points this into pytest's cache)."""
    global _cache_dir
    _cache_dir = path


@functools.cache
def migrations_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(MIGRATIONS.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(path.relative_to(MIGRATIONS).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def sqlite_clone(dest: Path) -> str:
    """A database at head in ``dest``: a copy of the template file."""
    shutil.copyfile(_sqlite_template(), dest)
    return f"sqlite:///{dest}"


@functools.cache
def _sqlite_template() -> Path:
    folder = _cache_dir or Path(tempfile.gettempdir()) / f"corral-test-db-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"template-{migrations_hash()}.db"
    with FileLock(folder / f"{final.name}.lock", timeout=120):
        if final.exists():
            return final
        fd, name = tempfile.mkstemp(dir=folder, suffix=".partial")
        os.close(fd)
        partial = Path(name)
        try:
            migrate(f"sqlite:///{partial}")
            # migrate() leaves the file in WAL mode; back in rollback-journal mode every
            # page is in the main file, so a plain copy is the whole database. The
            # coordinator turns WAL on again in each clone when it connects.
            with contextlib.closing(sqlite3.connect(partial)) as conn:
                conn.execute("PRAGMA journal_mode=DELETE")
            if Path(f"{partial}-wal").exists():
                raise RuntimeError(f"{partial}: the WAL did not fold back into the file")
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
    return final


@functools.cache
def pg_template(admin_url: str) -> str:
    """The name of the PostgreSQL template database, built on first use."""
    import psycopg

    name = f"corral_tmpl_{migrations_hash()}"
    partial = f"{name}_partial"
    base = admin_url.rsplit("/", 1)[0]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # Session-level: released when this connection closes, however the build ends.
        conn.execute("SELECT pg_advisory_lock(%s)", (int(migrations_hash(), 16),))
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found:
            return name
        conn.execute(f'DROP DATABASE IF EXISTS "{partial}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{partial}"')
        migrate(f"{base}/{partial}")
        conn.execute(f'ALTER DATABASE "{partial}" RENAME TO "{name}"')
        # CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template.
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    return name
