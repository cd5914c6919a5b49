"""Shared fixtures: a fresh database per test on SQLite and PostgreSQL, a real coordinator,
and a check that no test leaves a process, a thread or a listening socket behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import _dbtemplate
import _leaks
import pytest
from harness import Coordinator, fresh_database, start_coordinator


def pytest_configure(config: pytest.Config) -> None:
    cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
    if cache is not None:
        _dbtemplate.use_cache_dir(cache.mkdir("corral-db-template"))


@pytest.fixture(autouse=True)
def no_leaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Autouse, so it is set up first and torn down last: after every fixture has stopped
    what it started."""
    root = tmp_path_factory.getbasetemp()
    before = _leaks.snapshot(root)
    yield
    left = _leaks.leaked(before, root)
    if left:
        _leaks.kill_new(before, root)
        pytest.fail("the test left behind: " + "; ".join(left), pytrace=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Integration tests run on both stores, each test on a clone of a migrated template."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def coordinator(tmp_path: Path, db_url: str) -> Iterator[Coordinator]:
    coord, stop = start_coordinator(tmp_path / "server", db_url)
    try:
        yield coord
    finally:
        stop()
