"""Ship an attempt's output file to the coordinator in numbered batches while it runs.

Batches go one at a time, in order, each under the number it was first tried with: the
coordinator drops a number it has already stored, so a retry (or a resend after a worker
restart) never duplicates a line, and nothing is skipped while the coordinator is away —
the file on disk is the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from corral.model.errors import CorralError
from corral.protocol import LogBatch
from corral.worker._retry import Verdict, retrying, verdict

__all__ = ["LogShipper", "LogsRefused"]

log = structlog.get_logger("corral.worker.logs")


class LogsRefused(Exception):
    """The coordinator refused this attempt's logs for good: the attempt is no longer current
    (404, 409), or the worker token is refused (401, 403)."""

    def __init__(self, error: CorralError) -> None:
        self.error = error
        super().__init__(str(error))


class LogShipper:
    def __init__(
        self,
        source: Path | int | None,
        *,
        attempt: int,
        send: Callable[[LogBatch], Awaitable[None]],
        seq: int = 0,
        offset: int = 0,
        resend_end: int = 0,
        on_batch: Callable[[int, int, int], None] | None = None,
        on_data: Callable[[bytes], None] | None = None,
        interval_s: float = 0.5,
        max_bytes: int = 64 * 1024,
        backoff_max_s: float = 10.0,
    ) -> None:
        # A descriptor of the output file, opened before the job started, which the shipper
        # owns (``close``): the worker never reads by a name the job controls (``workdir``).
        # A path is read afresh each time (a file nobody else can swap). None: no output.
        self.source = source
        self.attempt = attempt
        self.seq = seq
        self.offset = offset
        # After a restart: the batch that was in flight, to be sent again exactly as it was.
        self._resend_end = resend_end if resend_end > offset else 0
        self._send = send
        self._on_batch = on_batch
        self._on_data = on_data  # what each batch holds, seen once (the worker's metrics)
        self.interval_s = interval_s
        self.max_bytes = max_bytes
        self.backoff_max_s = backoff_max_s
        self._finishing = asyncio.Event()
        self.progress_at = time.monotonic()  # when a batch last went through

    def finish(self) -> None:
        """The process ended: send what is left, then return."""
        self._finishing.set()

    def close(self) -> None:
        """Close the descriptor it reads from, once it is done (or will never run)."""
        if isinstance(self.source, int):
            os.close(self.source)
            self.source = None

    async def run(self) -> None:
        full = False
        while True:
            if not full and not self._finishing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._finishing.wait(), self.interval_s)
            final = self._finishing.is_set()
            data = self._read(final)
            if not data:
                if final:
                    return
                full = False
                continue
            full = len(data) >= self.max_bytes
            await self._ship(data)

    def _read(self, final: bool) -> bytes:
        size = self._resend_end - self.offset if self._resend_end else self.max_bytes
        try:
            if isinstance(self.source, int):
                data = os.pread(self.source, size, self.offset)
            elif self.source is not None:
                with self.source.open("rb") as fh:
                    fh.seek(self.offset)
                    data = fh.read(size)
            else:
                return b""
        except FileNotFoundError:
            return b""
        if self._resend_end or (final and len(data) < size):
            return data
        # Whole lines while there are some (a metric line is read from one batch: see
        # server.metrics); a line not ended yet, a progress bar's, goes as it is.
        end = data.rfind(b"\n") + 1
        return data[:end] if end else data[: _complete_utf8(data)]

    async def _ship(self, data: bytes) -> None:
        end = self.offset + len(data)
        if self._on_batch is not None:
            self._on_batch(self.seq, self.offset, end)
        if self._on_data is not None:
            self._on_data(data)
        batch = LogBatch(attempt=self.attempt, seq=self.seq, data=data.decode("utf-8", "replace"))
        try:
            async for attempt in retrying(
                initial_s=0.5,
                max_s=self.backoff_max_s,
                on_retry=lambda exc: log.warning("logs.retry", seq=batch.seq, error=str(exc)),
            ):
                with attempt:
                    await self._send(batch)
        except CorralError as exc:
            if verdict(exc) is not Verdict.GIVE_UP:
                raise LogsRefused(exc) from exc
            # Retrying the same bytes cannot help; skip them rather than stall the log.
            log.error("logs.batch_refused", seq=self.seq, error=str(exc))
        self.seq += 1
        self.offset = end
        self._resend_end = 0
        self.progress_at = time.monotonic()


def _complete_utf8(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead
            continue
        if byte < 0x80:
            return len(data)
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
        return len(data) if back >= need else len(data) - back
    return len(data)
