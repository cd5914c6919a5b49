"""The circuit breaker's states, on an injected clock: closed, open, and the one trial."""

from __future__ import annotations

import asyncio

from corral.protocol.transport import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _opened(clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker(threshold=2, cooldown_s=10, clock=clock)
    breaker.failure()
    assert not breaker.is_open()  # one failure is not a pattern
    breaker.failure()
    assert breaker.is_open()
    return breaker


async def _turns() -> None:
    """Let every ready task run: ``admit`` either answers without suspending or waits for the
    trial's outcome, so a few turns of the loop settle it (no clock involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def _callers(breaker: CircuitBreaker, n: int) -> tuple[list[asyncio.Task[bool]], int]:
    """``n`` callers asking at once; returns them and how many were let through at once."""
    tasks = [asyncio.create_task(breaker.admit()) for _ in range(n)]
    await _turns()
    through = [t for t in tasks if t.done()]
    assert all(t.result() for t in through)
    return tasks, len(through)


async def test_open_refuses_then_lets_exactly_one_trial_through() -> None:
    clock = Clock()
    breaker = _opened(clock)
    assert await breaker.admit() is False  # cooling down: refused without a call
    clock.now += 10
    assert not breaker.is_open()
    tasks, through = await _callers(breaker, 5)
    assert through == 1  # the trial; the other four wait for its outcome
    breaker.success()  # the trial's call answered
    assert await asyncio.gather(*tasks) == [True] * 5
    assert breaker.opened_at is None and breaker.failures == 0


async def test_with_nowhere_else_to_go_one_trial_goes_before_the_cooldown() -> None:
    breaker = _opened(Clock())
    assert await breaker.admit() is False  # another coordinator may be tried instead
    tasks = [asyncio.create_task(breaker.admit(last_resort=True)) for _ in range(4)]
    await _turns()
    assert sum(t.done() for t in tasks) == 1  # still one at a time, never the herd
    breaker.success()
    assert await asyncio.gather(*tasks) == [True] * 4


async def test_a_failed_trial_opens_it_again_and_the_waiters_are_refused() -> None:
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 10
    tasks, through = await _callers(breaker, 3)
    assert through == 1
    breaker.failure()
    assert sorted(await asyncio.gather(*tasks)) == [False, False, True]
    assert breaker.is_open() and breaker.opened_at == clock.now  # a fresh cooldown


async def test_a_trial_that_ends_without_a_verdict_hands_the_trial_on() -> None:
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 10
    trial = asyncio.create_task(_trial_then_cancelled(breaker))
    await _turns()
    tasks, through = await _callers(breaker, 2)
    assert through == 0  # the trial is out
    trial.cancel()
    await _turns()
    assert sum(t.done() for t in tasks) == 1  # one waiter is the next trial, the other waits
    breaker.success()
    assert await asyncio.gather(*tasks) == [True, True]


async def _trial_then_cancelled(breaker: CircuitBreaker) -> None:
    assert await breaker.admit()
    try:
        await asyncio.Event().wait()  # a call that never answers, then is cancelled
    finally:
        breaker.release()
