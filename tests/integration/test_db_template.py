"""Each test's database is a clone of a template at head, and no clone sees another's rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import _dbtemplate
import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from harness import fresh_database
from sqlalchemy import create_engine, text

from corral.store.db import MIGRATIONS, sync_url


def _revision_and_tables(url: str) -> tuple[str | None, set[str]]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            names = set(engine.dialect.get_table_names(conn))
            return MigrationContext.configure(conn).get_current_revision(), names
    finally:
        engine.dispose()


def test_a_clone_is_at_head_and_its_own(db_url: str, tmp_path: Path) -> None:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    revision, tables = _revision_and_tables(db_url)
    assert revision == head
    engine = create_engine(sync_url(db_url))
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE only_in_this_clone (x INTEGER)"))
    finally:
        engine.dispose()
    kind = "sqlite" if db_url.startswith("sqlite") else "postgres"
    (tmp_path / "other").mkdir()
    with fresh_database(kind, tmp_path / "other") as other:
        assert _revision_and_tables(other) == (head, tables)


def test_the_template_is_named_by_the_migrations(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:  # fmt: skip
    original = _dbtemplate.migrations_hash()
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(_dbtemplate, "MIGRATIONS", copy)
    try:
        _dbtemplate.migrations_hash.cache_clear()
        assert _dbtemplate.migrations_hash() == original  # the content counts, not the place
        with (copy / "versions" / "0001_initial_schema.py").open("a") as fh:
            fh.write("\n# edited\n")
        _dbtemplate.migrations_hash.cache_clear()
        assert _dbtemplate.migrations_hash() != original
    finally:
        _dbtemplate.migrations_hash.cache_clear()
