"""What can go wrong with a local fleet, named so a caller can say it in one line."""

from __future__ import annotations


class FleetError(Exception):
    """A local process failed: the coordinator or a worker did not start, or died."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BadSetting(FleetError):
    """A setting of the fleet cannot be used: its data directory, database or address."""
