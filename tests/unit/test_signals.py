"""The coordinator's in-memory wake-ups (``corral.server.hub.Signals``)."""

from __future__ import annotations

import asyncio

from corral.server.hub import Signals, wait


async def test_one_event_wakes_a_watch_for_many_keys_and_names_the_key() -> None:
    s = Signals()
    with s.watching([f"job{i}" for i in range(1000)]) as w:
        s.notify("job500")
        await asyncio.wait_for(wait(w.event, 5), 1)
        assert w.take() == {"job500"}
        assert not w.event.is_set() and w.take() == set()
    assert len(s) == 0  # the block's keys go with it


async def test_a_watch_for_many_keys_leaves_other_waiters_theirs() -> None:
    s = Signals()
    single = s.watch("b")
    with s.watching(["a", "b", "c"]) as w:
        s.notify("b")  # the single waiter is woken, and so is the watch for many
        assert single.is_set() and w.event.is_set() and w.take() == {"b"}


async def test_overlapping_watches_each_get_their_keys() -> None:
    s = Signals()
    with s.watching(["a", "b"]) as one, s.watching(["b", "c"]) as two:
        s.notify("b")
        assert one.take() == {"b"} and two.take() == {"b"}
        s.notify("a")
        s.notify("c")
        assert one.take() == {"a"} and two.take() == {"c"}
    assert len(s) == 0


async def test_a_notify_between_two_reads_is_kept_not_lost() -> None:
    s = Signals()
    with s.watching(["a", "b"]) as w, s.watching(["b"]) as other:
        s.notify("a")
        assert w.take() == {"a"}  # woken, and reading "a"
        s.notify("b")  # before it waits again: held for the next wait, for both watches
        await asyncio.wait_for(wait(w.event, 5), 1)
        assert w.take() == {"b"} and other.take() == {"b"}
    with s.watching(["b"]) as later:
        s.notify("b")
        assert later.take() == {"b"}
