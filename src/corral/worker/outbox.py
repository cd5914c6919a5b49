"""Deliver final reports from the journal until the coordinator acks or refuses each one.

A report is written to the journal before the first try, so a result produced while the
coordinator is away survives a worker restart; it leaves the journal only when acked, or
refused for good (404/409: the job or attempt is no longer there to take it).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable

import structlog

from corral.model.errors import CorralError
from corral.protocol import AttemptReport
from corral.worker._retry import Backoff, Verdict, verdict
from corral.worker.client import BadAnswer, TokenRefused, WorkerClient
from corral.worker.journal import Journal

__all__ = ["Outbox"]

log = structlog.get_logger("corral.worker.outbox")


class Outbox:
    def __init__(
        self,
        journal: Journal,
        client: WorkerClient,
        *,
        on_change: Callable[[], None] = lambda: None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        self.journal = journal
        self.client = client
        self.on_change = on_change
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._wake = asyncio.Event()
        # Reports the journal could not take (its disk is full): held here until delivered.
        # They do not outlive this process; the coordinator then retries their jobs.
        self.unjournaled: dict[tuple[str, int], AttemptReport] = {}
        # Delivered, but the journal could not forget them yet (a full disk again).
        self._delivered: set[tuple[str, int]] = set()

    @property
    def empty(self) -> bool:
        owed = set(self.journal.pending_keys()) - self._delivered
        return not owed and not self.unjournaled

    def keep(self, job_id: str, attempt: int, report: AttemptReport) -> None:
        """A final report the journal could not record: deliver it from memory."""
        self.unjournaled[(job_id, attempt)] = report
        self.wake()

    def wake(self) -> None:
        """A new report is in the journal: try now, not at the end of the backoff."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver for ever; raises TokenRefused."""
        backoff = Backoff(self.backoff_initial_s, self.backoff_max_s)
        while True:
            self._wake.clear()
            if await self.deliver_pending():
                backoff.reset()
                await self._wake.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff.next())

    async def deliver_pending(self) -> bool:
        """One pass over the journal (and what it could not take); True when nothing is
        left to deliver."""
        owed = [(p.job_id, p.attempt, p.report) for p in self.journal.pending_reports()]
        owed += [(j, a, r) for (j, a), r in self.unjournaled.items()]
        for job_id, attempt, report in owed:
            if (job_id, attempt) in self._delivered:
                self._done(job_id, attempt)  # only forgetting it was left to do
                continue
            bound = log.bind(job_id=job_id, attempt=attempt)
            try:
                ack = await self.client.report(job_id, report)
            except BadAnswer as exc:
                bound.warning("report.ack_unreadable", error=str(exc))  # 2xx: it was taken
            except CorralError as exc:
                match verdict(exc):
                    case Verdict.FATAL:
                        raise TokenRefused(str(exc)) from exc
                    case Verdict.RETRY:
                        bound.warning("report.retry", status=report.status, error=str(exc))
                        return False
                    case Verdict.DROP:  # the coordinator has moved on
                        bound.info("report.refused", status=report.status, error=str(exc))
                    case Verdict.GIVE_UP:
                        # Keeping bytes that will never be taken would block every later report.
                        bound.error("report.refused", status=report.status, error=str(exc))
            else:
                bound.info("report.delivered", status=report.status, job_state=ack.state)
            self._done(job_id, attempt)
            self.on_change()
        return True

    def _done(self, job_id: str, attempt: int) -> None:
        key = (job_id, attempt)
        self.unjournaled.pop(key, None)
        try:
            self.journal.report_done(job_id, attempt)
        except sqlite3.Error:
            self._delivered.add(key)  # never sent again; forgotten once the disk has room
        else:
            self._delivered.discard(key)
