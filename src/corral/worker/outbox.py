"""Deliver final reports from the journal until the coordinator acks or refuses each one.

A report is written to the journal before the first try, so a result produced while the
coordinator is away survives a worker restart; it leaves the journal only when acked, or
refused for good (404/409: the job or attempt is no longer there to take it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from corral.model.errors import CorralError, Unreachable
from corral.protocol import AttemptReport, ReportOutcome, WorkerReport
from corral.protocol.errors import from_problem
from corral.protocol.schemas import MAX_REPORTS
from corral.worker._retry import Backoff, Verdict, verdict
from corral.worker.client import BadAnswer, TokenRefused, WorkerClient
from corral.worker.journal import Journal

__all__ = ["Outbox"]

# A report owed: (job id, attempt, report). Running reports said, by (job id, attempt): the
# report and the future its attempt waits on.
Owed = tuple[str, int, AttemptReport]
Said = dict[tuple[str, int], tuple[AttemptReport, asyncio.Future[Any]]]

log = structlog.get_logger("corral.worker.outbox")
# A running report with no call on its way waits this long for company: a job that ends
# within it (a test case, a call, `true`) is said by its end alone, one call instead of two
# one after the other; any other report sent meanwhile takes it along.
HOLD_RUNNING_S = 0.02


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
        # Running reports to go with the next call (see ``running``).
        self._running: Said = {}
        self._delivering = False  # a call of deliver_pending is on its way

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

    def running(self, job_id: str, report: AttemptReport) -> asyncio.Future[ReportOutcome | None]:
        """Say an attempt runs, with the next call; its outcome (None: its final report went
        in its place), or the error that refused it. Not journaled, and not retried: the
        final report is, and the coordinator takes it straight after the assignment too."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ReportOutcome | None] = loop.create_future()
        self._running[(job_id, report.attempt)] = (report, future)
        # With the next call: so a busy worker's reports share calls, and one whose job ended
        # meanwhile is said by the end alone. With none on its way, after HOLD_RUNNING_S at
        # most (not later: a worker that dies before saying an attempt runs has its
        # coordinator send the same attempt again).
        if self._delivering or len(self._running) > 1:
            self.wake()
        else:
            loop.call_later(HOLD_RUNNING_S, self.wake)
        return future

    async def deliver_pending(self) -> bool:
        """One pass over the journal (and what it could not take), with the running reports
        queued since the last, a batch a call; True when nothing is left to deliver."""
        self._delivering = True
        try:
            return await self._deliver_pending()
        finally:
            self._delivering = False

    async def _deliver_pending(self) -> bool:
        owed = [(p.job_id, p.attempt, p.report) for p in self.journal.pending_reports()]
        owed += [(j, a, r) for (j, a), r in self.unjournaled.items()]
        finals: list[Owed] = []
        for job_id, attempt, report in owed:
            if (job_id, attempt) in self._delivered:
                self._done(job_id, attempt)  # only forgetting it was left to do
            else:
                finals.append((job_id, attempt, report))
        running, self._running = self._running, {}
        ended = {(j, a) for j, a, _ in finals}
        for key, (_, future) in running.items():
            if key in ended:
                _resolve(future, None)  # it ended before it was said to run: the end says it
        batch = [(j, a, r) for (j, a), (r, _) in running.items() if (j, a) not in ended]
        batch += finals
        try:
            for chunk in _chunks(batch):
                if not await self._send(chunk, running):
                    return False
        finally:
            for _, future in running.values():  # what a failed call left unsaid
                _resolve(future, Unreachable("the report was not sent"))
        return True

    async def _send(
        self,
        chunk: list[Owed],
        running: Said,
    ) -> bool:
        """One call for the chunk; False when the coordinator should be tried again later."""
        reports = [WorkerReport(job_id=j, **r.model_dump()) for j, _, r in chunk]
        try:
            outcomes = await self.client.reports(reports)
        except BadAnswer as exc:  # 2xx: they were taken
            log.warning("report.ack_unreadable", error=str(exc), reports=len(chunk))
            outcomes = [ReportOutcome(job_id=j, attempt=a) for j, a, _ in chunk]
        except CorralError as exc:
            if verdict(exc) in (Verdict.FATAL, Verdict.RETRY):
                return self._settle(chunk, running, [exc] * len(chunk))
            # Refused as a whole (a coordinator without the batch call; a report it cannot
            # take): each goes on its own, so that one refused never holds the others back.
            return await self._one_by_one(chunk, running)
        errors = [
            None if o.error is None else from_problem(o.error.status, o.error.model_dump())
            for o in outcomes
        ]
        return self._settle(chunk, running, errors, outcomes)

    async def _one_by_one(
        self,
        chunk: list[Owed],
        running: Said,
    ) -> bool:
        for item in chunk:
            job_id, attempt, report = item
            try:
                ack = await self.client.report(job_id, report)
            except BadAnswer as exc:  # 2xx: it was taken
                log.warning("report.ack_unreadable", error=str(exc), job_id=job_id)
                outcome = ReportOutcome(job_id=job_id, attempt=attempt)
            except CorralError as exc:
                if not self._settle([item], running, [exc]):
                    return False
                continue
            else:
                outcome = ReportOutcome(job_id=job_id, attempt=attempt, state=ack.state)
            self._settle([item], running, [None], [outcome])
        return True

    def _settle(
        self,
        chunk: list[Owed],
        running: Said,
        errors: list[CorralError | None],
        outcomes: list[ReportOutcome] | None = None,
    ) -> bool:
        """What the coordinator said of each; False when one should be tried again later."""
        again = False
        for i, ((job_id, attempt, report), exc) in enumerate(zip(chunk, errors, strict=True)):
            said = running.get((job_id, attempt))
            if said is not None and said[0] is report:  # a running report: said once
                _resolve(said[1], exc if exc is not None else outcomes[i] if outcomes else None)
                continue
            bound = log.bind(job_id=job_id, attempt=attempt)
            if exc is not None:
                match verdict(exc):
                    case Verdict.FATAL:
                        raise TokenRefused(str(exc)) from exc
                    case Verdict.RETRY:
                        bound.warning("report.retry", status=report.status, error=str(exc))
                        again = True
                        continue
                    case Verdict.DROP:  # the coordinator has moved on
                        bound.info("report.refused", status=report.status, error=str(exc))
                    case Verdict.GIVE_UP:
                        # Keeping bytes that will never be taken would block every later report.
                        bound.error("report.refused", status=report.status, error=str(exc))
            else:
                state = outcomes[i].state if outcomes else None
                bound.info("report.delivered", status=report.status, job_state=state)
            self._done(job_id, attempt)
            self.on_change()
        return not again

    def _done(self, job_id: str, attempt: int) -> None:
        key = (job_id, attempt)
        self.unjournaled.pop(key, None)
        try:
            self.journal.report_done(job_id, attempt)
        except sqlite3.Error:
            self._delivered.add(key)  # never sent again; forgotten once the disk has room
        else:
            self._delivered.discard(key)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    """Settle a running report's future, unless its attempt stopped waiting (cancelled)."""
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


# A call carries at most this many reports, and about this many bytes of them.
_CHUNK_REPORTS = MAX_REPORTS
_CHUNK_BYTES = 4 * 1024 * 1024


def _chunks(
    items: list[Owed],
) -> Iterator[list[Owed]]:
    chunk: list[Owed] = []
    size = 0
    for item in items:
        # Only a result can be large; the rest of a report is a few hundred bytes at most.
        cost = 500 + (len(json.dumps(item[2].result)) if item[2].result else 0)
        if chunk and (len(chunk) >= _CHUNK_REPORTS or size + cost > _CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += cost
    if chunk:
        yield chunk
