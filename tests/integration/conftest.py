"""Integration fixtures: a coordinator on an injectable clock whose reaper the test ticks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Coordinator, start_coordinator

from corral.server.clock import FakeClock


@pytest.fixture
def clocked(tmp_path: Path, db_url: str) -> Iterator[tuple[Coordinator, FakeClock]]:
    # No reaper loop: under the fake clock a tick of its own between a test's
    # clock.advance() and its next request would act on a moment the test never meant
    # it to see. These tests tick it themselves.
    clock = FakeClock()
    coord, stop = start_coordinator(tmp_path / "server", db_url, clock=clock, reaper=False,
                                    retry_backoff_base_s=0)  # fmt: skip
    try:
        yield coord, clock
    finally:
        stop()
