"""A coordinator's and a worker's data directories, and the databases in them, are their
owner's alone (the database holds every token's hash and every job's environment)."""

from __future__ import annotations

import stat
from pathlib import Path

from harness import start_coordinator

from corral.worker.journal import Journal


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_coordinators_data_dir_is_private(tmp_path, db_url):
    data = tmp_path / "new" / "data"
    _, stop = start_coordinator(data, db_url)
    try:
        assert _mode(data) == 0o700
    finally:
        stop()


def test_the_embedded_database_is_made_private(tmp_path):
    from corral.server.app import _prepare
    from corral.server.config import ServerSettings

    data = tmp_path / "embedded"
    _prepare(ServerSettings(data_dir=data))
    assert _mode(data) == 0o700
    for f in data.glob("corral.db*"):  # the database, and SQLite's -wal and -shm beside it
        assert _mode(f) == 0o600, f


def test_a_workers_journal_is_private(tmp_path):
    journal = Journal(tmp_path / "worker")
    try:
        assert _mode(tmp_path / "worker") == 0o700
        assert _mode(journal.path) == 0o600
    finally:
        journal.close()


def test_an_existing_directory_is_left_as_it_is(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    Journal(shared).close()
    assert _mode(shared) == 0o755
    assert _mode(shared / "journal.sqlite3") == 0o600
