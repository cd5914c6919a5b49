"""The worker's heartbeat: that it lives, what it holds, and whether it takes new work."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from corral.model.errors import CorralError
from corral.protocol import AttemptRef, HeartbeatRequest, HeartbeatResponse
from corral.worker import _disk, hardware
from corral.worker import guard as resources
from corral.worker._retry import Verdict, verdict
from corral.worker.client import BadAnswer, TokenRefused, WorkerClient
from corral.worker.guard import Guard
from corral.worker.journal import Journal

__all__ = ["Heartbeat"]

GUARD_EVERY_S = 2.0  # how often the resource guard samples the machine


class Heartbeat:
    """Beats every ``interval_s``; ``on_answer`` acts on the coordinator's reply,
    ``on_unknown`` when the coordinator no longer knows this worker (register again)."""

    def __init__(
        self,
        client: WorkerClient,
        journal: Journal,
        data_dir: Path,
        *,
        interval_s: float,
        held: Callable[[], Iterable[tuple[str, int]]],
        on_answer: Callable[[HeartbeatResponse], None],
        on_unknown: Callable[[], None],
        log: Any,
    ) -> None:
        self.client = client
        self.journal = journal
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.held = held
        self.on_answer = on_answer
        self.on_unknown = on_unknown
        self.log = log
        self.disk: str | None = None  # why its disk takes no new work (it is full)
        self.limit: str | None = None  # a resource limit passed, or its cooldown (guard)
        self.answered_at: float | None = None  # when the coordinator last answered a beat

    @property
    def constrained(self) -> str | None:
        """Why it takes no new work now, or None: it does."""
        return self.disk or self.limit

    def claimed(self) -> list[AttemptRef]:
        """What it holds: the attempts that run, then those whose report is not acked yet."""
        return self.journal.claimed(self.held())

    async def run(self) -> None:
        hardware.usage()  # the first cpu_percent reading is meaningless; prime it
        while True:
            await asyncio.sleep(self.interval_s)
            if self.disk is not None and await self._has_room():
                self.log.info("worker.unconstrained", was=self.disk)
                self.disk = None
            await self.beat()

    async def guard(self, guard: Guard, gpus: list[int], every_s: float = GUARD_EVERY_S) -> None:
        """Sample the machine every ``every_s`` against the guard's limits; a change of
        verdict (constrained or not) is said at once, not at the next beat."""
        resources.sample(gpus)  # the first cpu_percent reading is meaningless; prime it
        while True:
            await asyncio.sleep(every_s)
            why = guard.check(await asyncio.to_thread(resources.sample, gpus))
            was, self.limit = self.limit, why
            if (why is None) == (was is None):
                continue  # a new wording (the cooldown's end) goes with the next beat
            if why is None:
                self.log.info("worker.unconstrained", was=was)
            else:
                self.log.warning("worker.constrained", reason=why)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self.beat()

    async def _has_room(self) -> bool:
        if await asyncio.to_thread(_disk.room, self.data_dir) is not None:
            return False
        try:
            self.journal.probe()  # on this thread: the journal's connection is its own
        except sqlite3.Error:
            return False
        return True

    async def constrain(self, why: str) -> None:
        """Take no new work until the data directory has room, and tell the coordinator now."""
        if self.disk is None:
            self.log.warning("worker.constrained", reason=why)
        self.disk = why
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.interval_s):
                await self.beat()

    async def beat(self) -> None:
        cpu, memory = hardware.usage()
        req = HeartbeatRequest(running=self.claimed(), cpu_percent=cpu, sent_ns=time.time_ns(),
                               memory_used_bytes=memory, constrained=self.constrained)  # fmt: skip
        try:
            resp = await self.client.heartbeat(req)
        except (CorralError, BadAnswer) as exc:
            why = verdict(exc) if isinstance(exc, CorralError) else Verdict.RETRY
            if why is Verdict.FATAL:
                raise TokenRefused(str(exc)) from exc
            if why is Verdict.DROP:  # the coordinator no longer knows this worker
                self.on_unknown()
            # Not retried: the next beat is only an interval away.
            event = "heartbeat.failed" if why is Verdict.RETRY else "heartbeat.refused"
            self.log.warning(event, error=str(exc))
            return
        self.answered_at = time.time()
        self.on_answer(resp)
