"""The schema is migrated once per start, and coordinators starting together do not race."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from harness import start_coordinator
from sqlalchemy import create_engine, text

from corral.store import db


def test_a_coordinator_migrates_once_per_start(tmp_path: Path, db_url: str, monkeypatch) -> None:
    calls: list[str] = []
    real = db.migrate

    def counting(url: str) -> None:
        calls.append(url)
        real(url)

    monkeypatch.setattr(db, "migrate", counting)
    monkeypatch.setattr("corral.server.app.migrate", counting)
    coord, stop = start_coordinator(tmp_path / "server", db_url)
    try:
        with coord.client() as c:
            assert c.get("/readyz").status_code == 200
    finally:
        stop()
    assert len(calls) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_coordinators_starting_at_once_migrate_one_after_the_other(db_url: str) -> None:
    # Without a lock, two migrations of a fresh database race to create the same tables and
    # one start fails ("relation already exists" / a duplicate key in pg_type).
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def start() -> None:
        go.wait()
        try:
            db.migrate(db_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    engine = create_engine(db.sync_url(db_url))
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert version == ScriptDirectory(str(db.MIGRATIONS)).get_current_head()
    finally:
        engine.dispose()
