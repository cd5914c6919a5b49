"""Shared fixtures: a fresh database per test on SQLite and PostgreSQL, a real coordinator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import _dbtemplate
import pytest
from harness import Coordinator, fresh_database, start_coordinator


def pytest_configure(config: pytest.Config) -> None:
    cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
    if cache is not None:
        _dbtemplate.use_cache_dir(cache.mkdir("corral-db-template"))


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
