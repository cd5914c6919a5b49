"""Deliver final reports from the journal until the coordinator acks or refuses each one.

A report is written to the journal before the first try, so a result produced while the
coordinator is away survives a worker restart; it leaves the journal only when acked, or
refused for good (404/409: the job or attempt is no longer there to take it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

import structlog

from corral.protocol.transport import ApiError, Unreachable
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

    @property
    def empty(self) -> bool:
        return self.journal.pending_count() == 0

    def wake(self) -> None:
        """A new report is in the journal: try now, not at the end of the backoff."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver for ever; raises TokenRefused."""
        delay = self.backoff_initial_s
        while True:
            self._wake.clear()
            if await self.deliver_pending():
                delay = self.backoff_initial_s
                await self._wake.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay * (0.5 + random.random()))
            delay = min(delay * 2, self.backoff_max_s)

    async def deliver_pending(self) -> bool:
        """One pass over the journal; True when nothing is left to deliver."""
        for pending in self.journal.pending_reports():
            bound = log.bind(job_id=pending.job_id, attempt=pending.attempt)
            try:
                ack = await self.client.report(pending.job_id, pending.report)
            except Unreachable as exc:
                bound.warning("report.unreachable", status=pending.report.status, error=str(exc))
                return False
            except BadAnswer as exc:
                bound.warning("report.ack_unreadable", error=str(exc))  # 2xx: it was taken
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise TokenRefused(str(exc)) from exc
                if exc.status >= 500 or exc.status in (408, 429):
                    bound.warning("report.retry", error=str(exc))
                    return False
                # 404/409: the coordinator has moved on. Any other 4xx: the same bytes will
                # never be taken, and keeping them would block every later report.
                level = bound.info if exc.status in (404, 409) else bound.error
                level("report.refused", status=pending.report.status, error=str(exc))
            else:
                bound.info("report.delivered", status=pending.report.status, job_state=ack.state)
            self.journal.report_done(pending.job_id, pending.attempt)
            self.on_change()
        return True
