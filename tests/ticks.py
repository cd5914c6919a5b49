"""Driving a coordinator's background work by hand, for tests on a fake clock."""

from __future__ import annotations

from typing import Any

from corral.server import reaper


def tick(coord: Any) -> None:
    """One reaper tick, on the coordinator's own loop."""
    coord.call(reaper.tick(coord.app.state.core))
