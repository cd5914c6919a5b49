"""In-memory wake-ups: open worker streams and who is waiting for what.

Nothing here is truth: a lost signal costs at most one polling interval, and a
restarted coordinator rebuilds this from workers reconnecting.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import weakref
from collections.abc import Hashable, Iterable
from datetime import datetime, timedelta

from corral.server.clock import Clock


class Signals:
    """Wake whoever watches a key. Watch *before* reading the database, then wait.

    Events are held weakly: once no waiter holds a key's event, the key is gone, so keys of
    finished jobs and departed workers do not pile up.
    """

    def __init__(self) -> None:
        self._events: weakref.WeakValueDictionary[Hashable, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )

    def __len__(self) -> int:
        return len(self._events)

    def watch(self, key: Hashable) -> asyncio.Event:
        ev = self._events.get(key)
        if ev is None:
            ev = self._events[key] = asyncio.Event()
        return ev

    def watch_many(self, keys: Iterable[Hashable]) -> list[asyncio.Event]:
        """Events to wait on for a notify of any of ``keys``: one shared by the keys no one
        else watches (a wait for a thousand jobs costs one event, not a thousand), plus
        those of other waiters, which keep theirs."""
        mine = asyncio.Event()
        theirs: dict[int, asyncio.Event] = {}
        for key in keys:
            ev = self._events.get(key)
            if ev is None or ev.is_set():
                self._events[key] = mine
            elif ev is not mine:
                theirs[id(ev)] = ev
        return [mine, *theirs.values()]

    def notify(self, key: Hashable) -> None:
        ev = self._events.pop(key, None)
        if ev is not None:
            ev.set()


async def wait(ev: asyncio.Event, seconds: float) -> None:
    """Wait for a signal, or until ``seconds`` pass (the polling fallback)."""
    try:
        await asyncio.wait_for(ev.wait(), seconds)
    except TimeoutError:
        pass


async def wait_any(events: list[asyncio.Event], seconds: float) -> None:
    """Wait for any of ``events`` (from ``Signals.watch_many``), or ``seconds``."""
    if len(events) == 1:
        return await wait(events[0], seconds)
    waits = [asyncio.ensure_future(ev.wait()) for ev in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


class Hub:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.workers = Signals()  # key: worker_id — new events in its outbox
        self.jobs = Signals()  # key: job_id — new logs or a new state
        self._sessions: dict[str, int] = {}  # worker_id -> open stream session
        self._closed: set[int] = set()  # sessions told to end (token rotated, removed)
        self._dropped: dict[str, tuple[datetime, int]] = {}  # worker_id -> (when, session)
        self.instance = secrets.token_hex(6)  # this coordinator, in workers.stream_owner
        self._ids = itertools.count(1)

    def open_stream(self, worker_id: str) -> int:
        session = next(self._ids)
        old = self._sessions.get(worker_id)
        if old is not None:
            self._closed.add(old)  # one stream per worker: the newest wins
            self.workers.notify(worker_id)
        self._sessions[worker_id] = session
        self._dropped.pop(worker_id, None)
        return session

    def close_stream(self, worker_id: str, session: int) -> None:
        self._closed.discard(session)
        if self._sessions.get(worker_id) == session:
            del self._sessions[worker_id]
            self._dropped[worker_id] = (self.clock.now(), session)

    def end_stream(self, worker_id: str) -> None:
        """Make the worker's open stream finish (its token no longer holds)."""
        session = self._sessions.get(worker_id)
        if session is not None:
            self._closed.add(session)
            self.workers.notify(worker_id)

    def is_closed(self, session: int) -> bool:
        return session in self._closed

    def connected(self) -> set[str]:
        return set(self._sessions)

    def owner(self, session: int) -> str:
        return f"{self.instance}:{session}"

    def dropped_longer_than(self, seconds: float) -> dict[str, tuple[datetime, str]]:
        """worker_id -> (when, owner) of streams that dropped more than ``seconds`` ago."""
        cutoff = self.clock.now() - timedelta(seconds=seconds)
        return {w: (t, self.owner(s)) for w, (t, s) in self._dropped.items() if t <= cutoff}

    def forget(self, worker_id: str) -> None:
        self._dropped.pop(worker_id, None)
