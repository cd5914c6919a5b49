"""``corral worker --db-path results.duckdb``: a local DuckDB table of the results this worker
produced (the IPFS testing framework's option), one row a finished attempt, readable with
plain DuckDB (``duckdb results.duckdb "SELECT * FROM results"``).

The file is opened for each row and closed again, so another process (a person's ``duckdb``)
can read it between rows; a row that meets the file locked is tried again a few times, then
logged and dropped: this is a cache of what the coordinator keeps, never the record. Needs
duckdb (``pip install 'corral[results]'``).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

__all__ = ["ResultsDb", "available"]

log = structlog.get_logger("corral.worker.results_db")

_TABLE = """CREATE TABLE IF NOT EXISTS results (
    job_id VARCHAR, attempt INTEGER, name VARCHAR, kind VARCHAR, outcome VARCHAR,
    exit_code INTEGER, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, duration_s DOUBLE,
    result JSON, error VARCHAR)"""


def available() -> str | None:
    """Why --db-path cannot be used here, or None."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return "--db-path needs duckdb: pip install 'corral[results]'"
    return None


class ResultsDb:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()  # one writer of the file in this process at a time

    def _write(self, row: dict[str, Any]) -> None:
        import duckdb

        for attempt in range(5):
            try:
                with duckdb.connect(str(self.path)) as db:
                    db.execute(_TABLE)
                    db.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               list(row.values()))  # fmt: skip
                return
            except duckdb.IOException:  # another process holds it: it reads between our rows
                time.sleep(0.2 * (attempt + 1))
        raise OSError(f"{self.path} stayed locked")

    async def record(
        self, *, job_id: str, attempt: int, name: str, kind: str, outcome: str,
        exit_code: int | None, started_at: float | None, result: dict[str, Any] | None,
        error: str | None,
    ) -> None:  # fmt: skip
        finished = datetime.now(UTC)
        started = datetime.fromtimestamp(started_at, UTC) if started_at else None
        row = {"job_id": job_id, "attempt": attempt, "name": name, "kind": kind,
               "outcome": outcome, "exit_code": exit_code, "started_at": started,
               "finished_at": finished,
               "duration_s": (finished - started).total_seconds() if started else None,
               "result": json.dumps(result) if result is not None else None,
               "error": error}  # fmt: skip
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, row)
            except Exception as exc:  # a cache: the coordinator has the record
                log.warning("results_db.not_written", path=str(self.path), error=str(exc))
