"""The transport's circuit breaker against real servers on loopback ports: a coordinator
that failed gets one trial call at a time, never every caller that was waiting, and fail-over
skips it while it cools down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corral.model.errors import Unreachable
from corral.protocol.transport import Transport

CALLERS = 5


class Coordinator:
    """Answers 503 while ``down``; otherwise holds each call until ``answer`` is set."""

    def __init__(self) -> None:
        self.down = True
        self.arrived = 0
        self.answer = asyncio.Event()
        self.answer_status = 200
        self.app = Starlette(routes=[Route("/x", self.route, methods=["GET"])])

    async def route(self, request: Request) -> Response:
        if self.down:
            return JSONResponse({"code": "unavailable", "detail": "down"}, 503)
        self.arrived += 1
        await self.answer.wait()
        return JSONResponse({"code": "unavailable"} if self.answer_status >= 500 else {},
                            self.answer_status)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(check: Callable[[], object], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def holds(check: Callable[[], object], for_s: float = 0.5) -> None:
    """``check`` stays true for ``for_s``: long enough for calls let through to arrive."""
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        assert check(), "condition broke"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def serving(fake: Coordinator) -> AsyncIterator[str]:
    config = uvicorn.Config(fake.app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        fake.answer.set()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Coordinator, Transport, Clock]]:
    """One coordinator, whose first failure opens its breaker (on a clock the test moves)."""
    fake = Coordinator()
    async with serving(fake) as url:
        transport = Transport(url, timeout_s=10, breaker_threshold=1, breaker_cooldown_s=10)
        clock = Clock()
        transport.breakers[url].clock = clock
        try:
            yield fake, transport, clock
        finally:
            await transport.aclose()


async def _open(fake: Coordinator, transport: Transport) -> None:
    with pytest.raises(Unreachable):
        await transport.request("GET", "/x", idempotent=False)  # 503: the breaker opens
    fake.down = False


def _callers(transport: Transport) -> list[asyncio.Task[Any]]:
    return [asyncio.create_task(transport.request("GET", "/x", idempotent=False))
            for _ in range(CALLERS)]  # fmt: skip


async def test_after_the_cooldown_one_trial_reaches_the_coordinator(served) -> None:
    fake, transport, clock = served
    await _open(fake, transport)
    clock.now += 10
    calls = _callers(transport)
    await until(lambda: fake.arrived >= 1)
    await holds(lambda: fake.arrived == 1)  # the others wait for the trial's answer
    fake.answer.set()
    answers = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert [r.status_code for r in answers] == [200] * CALLERS  # closed: they all went on
    assert fake.arrived == CALLERS


async def test_a_failed_trial_refuses_the_callers_that_waited(served) -> None:
    fake, transport, clock = served
    await _open(fake, transport)
    clock.now += 10
    fake.answer_status = 503
    calls = _callers(transport)
    await until(lambda: fake.arrived >= 1)
    await holds(lambda: fake.arrived == 1)
    fake.answer.set()
    answers = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert all(isinstance(a, Unreachable) for a in answers)
    assert fake.arrived == 1  # open again: the waiters were refused without a call


async def test_the_only_coordinator_is_tried_while_it_cools_down_one_call_at_a_time(
    served,
) -> None:
    # Refusing every call for the cooldown would leave a worker idle for up to that long
    # after its coordinator came back.
    fake, transport, _ = served
    await _open(fake, transport)
    calls = _callers(transport)
    await until(lambda: fake.arrived >= 1)
    await holds(lambda: fake.arrived == 1)
    fake.answer.set()
    answers = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert [r.status_code for r in answers] == [200] * CALLERS


async def test_fail_over_skips_an_open_coordinator_while_it_cools_down() -> None:
    first, second = Coordinator(), Coordinator()
    second.down = False
    second.answer.set()
    async with serving(first) as url1, serving(second) as url2:
        transport = Transport([url1, url2], timeout_s=10, breaker_threshold=1)
        try:
            assert (await transport.request("GET", "/x", idempotent=False)).status_code == 200
            assert transport.breakers[url1].is_open() and transport.current == url2
            first.down = False  # back, but not tried again until its cooldown is over
            for _ in range(3):
                await transport.request("GET", "/x", idempotent=False)
            assert (first.arrived, second.arrived) == (0, 4)
        finally:
            await transport.aclose()


async def test_a_cooling_coordinator_is_tried_when_the_others_do_not_answer() -> None:
    # The first came back while its breaker cools down; the second is now the one that is
    # down. A call must not give up with the one that would answer left untried.
    first, second = Coordinator(), Coordinator()
    second.down = False
    second.answer.set()
    first.answer.set()
    async with serving(first) as url1, serving(second) as url2:
        transport = Transport([url1, url2], timeout_s=10, breaker_threshold=1)
        try:
            await transport.request("GET", "/x", idempotent=False)
            assert transport.breakers[url1].is_open() and transport.current == url2
            first.down, second.down = False, True
            resp = await transport.request("GET", "/x", idempotent=False)
            assert resp.status_code == 200 and transport.current == url1
            assert first.arrived == 1
        finally:
            await transport.aclose()
