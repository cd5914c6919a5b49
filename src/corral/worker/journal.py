"""The worker's local memory across restarts: attempts it started and reports not yet acked.

SQLite because it is in the standard library, survives ``kill -9`` mid-write, and the data
is tiny. ``synchronous=FULL``: a final report, once written here, must outlive a power cut,
because the coordinator may never learn the result any other way.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from corral.config.private import private_dir, private_file
from corral.protocol import AttemptRef, AttemptReport

__all__ = ["AttemptRecord", "Journal", "JournalBusy", "PendingReport"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    job_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    pgid        INTEGER NOT NULL,
    create_time REAL NOT NULL,     -- the leader's start time: tells a reused pid from ours
    workdir     TEXT NOT NULL,
    started_at  REAL NOT NULL,     -- wall clock, so a timeout still holds after a restart
    timeout_s   REAL,
    gpus        TEXT NOT NULL DEFAULT '[]',
    log_seq     INTEGER NOT NULL DEFAULT 0,  -- the batch being sent (or next to send)
    log_offset  INTEGER NOT NULL DEFAULT 0,  -- where that batch starts in output.log
    log_end     INTEGER NOT NULL DEFAULT 0,  -- where it ends; = log_offset when none in flight
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    job_id     TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    report     TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
"""


class JournalBusy(Exception):
    """Another worker process uses this data directory."""


@dataclass
class AttemptRecord:
    job_id: str
    attempt: int
    pid: int
    pgid: int
    create_time: float
    workdir: Path
    started_at: float
    timeout_s: float | None = None
    gpus: list[int] = field(default_factory=list)
    log_seq: int = 0
    log_offset: int = 0
    log_end: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.attempt)


@dataclass(frozen=True)
class PendingReport:
    job_id: str
    attempt: int
    report: AttemptReport
    created_at: float


class Journal:
    """One per data directory; held with an exclusive lock while the worker runs."""

    def __init__(self, data_dir: Path) -> None:
        private_dir(data_dir)
        # Two workers sharing a journal would adopt and kill each other's attempts.
        self._lock_fd = os.open(data_dir / "worker.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise JournalBusy(f"another worker is using {data_dir}") from exc
        self.path = data_dir / "journal.sqlite3"
        private_file(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:  # its disk is full, or the file is not a journal
            self.close()
            raise OSError(f"its journal {self.path} cannot be opened: {exc}") from exc

    def close(self) -> None:
        self._db.close()
        os.close(self._lock_fd)

    # ---- attempts ------------------------------------------------------------

    def record_started(self, rec: AttemptRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO attempts (job_id, attempt, pid, pgid, create_time, workdir,"
            " started_at, timeout_s, gpus, log_seq, log_offset, log_end)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.job_id,
                rec.attempt,
                rec.pid,
                rec.pgid,
                rec.create_time,
                str(rec.workdir),
                rec.started_at,
                rec.timeout_s,
                json.dumps(rec.gpus),
                rec.log_seq,
                rec.log_offset,
                rec.log_end,
            ),
        )

    def attempts(self) -> list[AttemptRecord]:
        rows = self._db.execute(
            "SELECT job_id, attempt, pid, pgid, create_time, workdir, started_at, timeout_s,"
            " gpus, log_seq, log_offset, log_end FROM attempts ORDER BY started_at"
        ).fetchall()
        return [
            AttemptRecord(
                job_id=r[0],
                attempt=r[1],
                pid=r[2],
                pgid=r[3],
                create_time=r[4],
                workdir=Path(r[5]),
                started_at=r[6],
                timeout_s=r[7],
                gpus=list(json.loads(r[8])),
                log_seq=r[9],
                log_offset=r[10],
                log_end=r[11],
            )
            for r in rows
        ]

    def set_log_position(self, job_id: str, attempt: int, seq: int, offset: int, end: int) -> None:
        """Written before batch ``seq`` = bytes [offset, end) is sent, so that after a restart
        the same batch goes again under the same number and the coordinator drops the copy."""
        self._db.execute(
            "UPDATE attempts SET log_seq = ?, log_offset = ?, log_end = ?"
            " WHERE job_id = ? AND attempt = ?",
            (seq, offset, end, job_id, attempt),
        )

    def probe(self) -> None:
        """A committed write, or the sqlite3.Error that says the journal cannot take one."""
        self._db.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (time.time(),))

    def forget(self, job_id: str, attempt: int) -> None:
        """The attempt ended with nothing to report (stopped as stale, or by shutdown)."""
        self._db.execute("DELETE FROM attempts WHERE job_id = ? AND attempt = ?", (job_id, attempt))

    # ---- outbox --------------------------------------------------------------

    def finish(self, job_id: str, attempt: int, report: AttemptReport) -> None:
        """The attempt ended: drop it from ``attempts`` and queue its report, in one step."""
        with self._tx():
            self._db.execute(
                "DELETE FROM attempts WHERE job_id = ? AND attempt = ?", (job_id, attempt)
            )
            self._db.execute(
                "INSERT OR REPLACE INTO outbox (job_id, attempt, report, created_at)"
                " VALUES (?, ?, ?, ?)",
                (job_id, attempt, report.model_dump_json(), time.time()),
            )

    def pending_reports(self) -> list[PendingReport]:
        rows = self._db.execute(
            "SELECT job_id, attempt, report, created_at FROM outbox ORDER BY created_at"
        ).fetchall()
        return [
            PendingReport(r[0], r[1], AttemptReport.model_validate_json(r[2]), r[3]) for r in rows
        ]

    def drop_unreadable_reports(self) -> list[tuple[str, int]]:
        """Remove reports this version cannot read back (a damaged row); returns their keys."""
        bad = []
        for job_id, attempt, text in self._db.execute("SELECT job_id, attempt, report FROM outbox"):
            try:
                AttemptReport.model_validate_json(text)
            except ValueError:
                bad.append((str(job_id), int(attempt)))
        for job_id, attempt in bad:
            self.report_done(job_id, attempt)
        return bad

    def pending_keys(self) -> list[tuple[str, int]]:
        """The attempts whose final report the coordinator has not acknowledged yet."""
        rows = self._db.execute("SELECT job_id, attempt FROM outbox ORDER BY created_at")
        return [(str(r[0]), int(r[1])) for r in rows.fetchall()]

    def claimed(self, running: Iterable[tuple[str, int]]) -> list[AttemptRef]:
        """What register and every heartbeat say this worker holds: the attempts that run,
        then the ended ones whose final report is not acknowledged yet. The coordinator
        loses an attempt it is not told of, and then refuses its result."""
        keys = dict.fromkeys(running)
        for key in self.pending_keys():
            keys.setdefault(key)
        return [AttemptRef(job_id=j, attempt=a) for j, a in keys]

    def has_report(self, job_id: str, attempt: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM outbox WHERE job_id = ? AND attempt = ?", (job_id, attempt)
        ).fetchone()
        return row is not None

    def pending_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def report_done(self, job_id: str, attempt: int) -> None:
        """Acked, or refused for good (409/404): never send it again."""
        self._db.execute("DELETE FROM outbox WHERE job_id = ? AND attempt = ?", (job_id, attempt))

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
