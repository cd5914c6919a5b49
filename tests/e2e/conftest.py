"""Fixtures for the end-to-end tier: a Fleet of real processes, torn down after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import browser  # noqa: F401 - the fixture, for the dashboard's and worker page's tests
from harness import fresh_database
from harness_e2e import Fleet


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """End-to-end tests run on SQLite; a test opts into PostgreSQL too with
    ``@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)``."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def fleet(tmp_path: Path, db_url: str, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    f = Fleet(tmp_path, db_url)
    try:
        yield f
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(f.dump())
        f.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
