"""Manual recovery of a worker's local state: ``corral worker --recover`` checks and repairs
its journal and attempt directories; ``--reset-state`` starts from nothing. Either prints
what it found and did; then the worker starts as usual.

What is dropped here counts, on the coordinator, as attempts this worker no longer holds:
they are lost and retried there, never failed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from corral.worker import _procs
from corral.worker.journal import Journal
from corral.worker.workdir import read_exit_code

__all__ = ["Account", "recover", "reset"]

JOURNAL = "journal.sqlite3"


@dataclass
class Account:
    """What recovery found and did, one line each, for the person who asked."""

    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)

    def __str__(self) -> str:
        return "\n".join(self.lines) or "nothing to do"


def _journal_is_sound(path: Path) -> str | None:
    """None when the journal reads back whole; else what is wrong with it."""
    if not path.exists():
        return None
    try:
        with sqlite3.connect(path) as db:
            result = db.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.Error as exc:
        return str(exc)
    return None if result == "ok" else str(result)


def _set_aside(path: Path, account: Account) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        p = path.with_name(path.name + suffix)
        if p.exists():
            p.rename(p.with_name(f"{p.name}.corrupt-{stamp}"))
    account.say(f"journal unreadable: set aside as {path.name}.corrupt-{stamp}; started anew")


def recover(data_dir: Path) -> Account:
    """Check and repair: an unreadable journal is set aside, attempts whose directory is
    gone or that ended with no exit status are dropped, unreadable reports are dropped, and
    attempt directories the journal does not know are removed. What still runs is kept for
    the worker to adopt."""
    account = Account()
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / JOURNAL
    if (why := _journal_is_sound(path)) is not None:
        account.say(f"journal check failed: {why}")
        _set_aside(path, account)
    journal = Journal(data_dir)  # holds the data directory's lock, as a running worker does
    try:
        known: set[Path] = set()
        for rec in journal.attempts():
            where = f"{rec.job_id} attempt {rec.attempt}"
            alive = _procs.leader_alive(rec.pid, rec.create_time)
            if not rec.workdir.is_dir():
                if alive and _procs.group_is_ours(rec.pgid, rec.create_time):
                    _procs.signal_group(rec.pgid, signal.SIGKILL)
                journal.forget(rec.job_id, rec.attempt)
                account.say(f"{where}: its directory is gone; dropped (retried elsewhere)")
            elif alive:
                known.add(rec.workdir)
                account.say(f"{where}: still running (pid {rec.pid}); kept")
            elif read_exit_code(rec.workdir) is not None:
                known.add(rec.workdir)
                account.say(f"{where}: ended while the worker was away; will be reported")
            else:
                journal.forget(rec.job_id, rec.attempt)
                account.say(f"{where}: ended with no exit status; dropped (retried elsewhere)")
        dropped = journal.drop_unreadable_reports()
        for job_id, attempt in dropped:
            account.say(f"{job_id} attempt {attempt}: its report is unreadable; dropped")
        owed = journal.pending_count()
        if owed:
            account.say(f"{owed} final report(s) owed to the coordinator; kept")
    finally:
        journal.close()
    attempts = data_dir / "attempts"
    if attempts.is_dir():
        stray = [d for d in attempts.iterdir() if d.is_dir() and d not in known]
        for d in stray:
            shutil.rmtree(d, ignore_errors=True)
        if stray:
            account.say(f"{len(stray)} attempt directories that no attempt owns: removed")
    return account


def reset(data_dir: Path) -> Account:
    """Start from an empty state: stop every attempt the journal knows of that still runs,
    then remove the journal and every attempt directory."""
    account = Account()
    path = data_dir / JOURNAL
    if path.exists() and _journal_is_sound(path) is None:
        journal = Journal(data_dir)
        try:
            for rec in journal.attempts():
                if _procs.leader_alive(rec.pid, rec.create_time) and _procs.signal_group(
                    rec.pgid, signal.SIGKILL
                ):
                    account.say(f"{rec.job_id} attempt {rec.attempt}: stopped (pid {rec.pid})")
            owed = journal.pending_count()
            if owed:
                account.say(f"{owed} final report(s) not delivered: dropped (retried elsewhere)")
        finally:
            journal.close()
    elif path.exists():
        account.say("journal unreadable: its attempts cannot be stopped from here")
    for name in os.listdir(data_dir) if data_dir.is_dir() else []:
        if name.startswith(JOURNAL):
            (data_dir / name).unlink()
    if (data_dir / "attempts").is_dir():
        shutil.rmtree(data_dir / "attempts")
        account.say("attempt directories removed")
    account.say("state reset: the coordinator counts what this worker held as lost")
    return account
