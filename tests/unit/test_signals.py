"""The coordinator's in-memory wake-ups (``corral.server.hub.Signals``)."""

from __future__ import annotations

import asyncio

from corral.server.hub import Signals, wait_any


async def test_one_event_wakes_a_wait_for_many_keys() -> None:
    s = Signals()
    events = s.watch_many([f"job{i}" for i in range(1000)])
    assert len(events) == 1
    s.notify("job500")
    await asyncio.wait_for(wait_any(events, 5), 1)
    assert events[0].is_set()


async def test_a_wait_for_many_keys_leaves_other_waiters_theirs() -> None:
    s = Signals()
    single = s.watch("b")
    events = s.watch_many(["a", "b", "c"])
    assert single in events and len(events) == 2
    s.notify("b")  # the single waiter is woken, and so is the wait for many
    assert single.is_set()
    await asyncio.wait_for(wait_any(events, 5), 1)


async def test_watching_again_after_a_wake_up_takes_a_fresh_event() -> None:
    s = Signals()
    first = s.watch_many(["a", "b"])
    s.notify("a")
    again = s.watch_many(["a", "b"])  # "b" still holds the first, already set, event
    assert len(again) == 1 and not again[0].is_set()
    s.notify("b")
    assert again[0].is_set() and first[0].is_set()
