"""In-memory wake-ups: open worker streams and who is waiting for what.

Nothing here is truth: a lost signal costs at most one polling interval, and a
restarted coordinator rebuilds this from workers reconnecting.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import weakref
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from corral.server.clock import Clock


class Watch:
    """One waiter's keys, held while it waits: those notified since it last looked collect
    in ``fired``, so a read after a wake-up need only look at them."""

    __slots__ = ("event", "fired")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.fired: set[Hashable] = set()

    def take(self) -> set[Hashable]:
        """The keys notified since the last take; the event is cleared for the next."""
        fired, self.fired = self.fired, set()
        self.event.clear()
        return fired


class Signals:
    """Wake whoever watches a key. Watch *before* reading the database, then wait.

    Events are held weakly: once no waiter holds a key's event, the key is gone, so keys of
    finished jobs and departed workers do not pile up. A ``watching`` block's keys go when
    the block ends.
    """

    def __init__(self) -> None:
        self._events: weakref.WeakValueDictionary[Hashable, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )
        self._watches: dict[Hashable, list[Watch]] = {}

    def __len__(self) -> int:
        return len(self._events) + len(self._watches)

    def watch(self, key: Hashable) -> asyncio.Event:
        ev = self._events.get(key)
        if ev is None:
            ev = self._events[key] = asyncio.Event()
        return ev

    @contextmanager
    def watching(self, keys: Iterable[Hashable]) -> Iterator[Watch]:
        """Watch ``keys`` for the whole block, not one wake-up: a notify between two reads
        is kept in ``fired``, not lost, and a wait for a thousand keys is one event."""
        w = Watch()
        held = list(keys)
        for key in held:
            self._watches.setdefault(key, []).append(w)
        try:
            yield w
        finally:
            for key in held:
                ws = self._watches.get(key)
                if ws is None:
                    continue
                ws.remove(w)
                if not ws:
                    del self._watches[key]

    def notify(self, key: Hashable) -> None:
        ev = self._events.pop(key, None)
        if ev is not None:
            ev.set()
        for w in self._watches.get(key, ()):
            w.fired.add(key)
            w.event.set()


async def wait(ev: asyncio.Event, seconds: float) -> None:
    """Wait for a signal, or until ``seconds`` pass (the polling fallback)."""
    try:
        await asyncio.wait_for(ev.wait(), seconds)
    except TimeoutError:
        pass


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

    def streams_open(self) -> int:
        """Workers' event streams open on this coordinator."""
        return len(self._sessions)

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
