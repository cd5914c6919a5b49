"""One process of the fleet load generator: simulated workers that speak the real worker
protocol. Each is created with its own token, registers, holds its SSE stream open and
heartbeats at the interval the coordinator gives (the first one at a random point of it, so
the fleet's beats are spread). A job offered to one is declined, as a worker that cannot run
it would (the coordinator ends that attempt with the reason; the job runs again if it has
retries left); the benchmark's jobs are pinned by label to a real worker, so none should be
offered.

``python -m corral.bench._simworkers`` reads its settings as JSON on stdin and prints its
counters as one JSON line a second on stdout; SIGTERM ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from corral.bench._stats import raise_fd_limit
from corral.protocol import (
    WORKER_TOKEN_HEADER,
    AttemptReport,
    HeartbeatRequest,
    JobAssign,
    RegisterRequest,
    RegisterResponse,
)

REQUEST_TIMEOUT = httpx.Timeout(60.0)
# A stream is pinged every few seconds; silence this long means it is gone.
STREAM_TIMEOUT = httpx.Timeout(60.0, read=30.0)


@dataclass
class Counters:
    created: int = 0
    registered: int = 0
    streaming: int = 0
    heartbeats: int = 0
    declined: int = 0
    drops: int = 0
    errors: int = 0
    last_error: str = ""


class SimWorker:
    def __init__(self, http: httpx.AsyncClient, name: str, token: str, n: Counters) -> None:
        self.http, self.name, self.n = http, name, n
        self.headers = {WORKER_TOKEN_HEADER: token}
        self.interval_s = 30.0
        self.registered = asyncio.Event()

    def _fail(self, exc: BaseException) -> None:
        self.n.errors += 1
        self.n.last_error = f"{self.name}: {type(exc).__name__}: {exc}"[:300]

    async def register(self) -> None:
        body = RegisterRequest(name=self.name, hostname="simulated", persistent=True,
                               version="bench-simulated")  # fmt: skip
        r = await self.http.post("/api/workers/register", headers=self.headers,
                                 json=body.model_dump(mode="json", exclude_none=True),
                                 timeout=REQUEST_TIMEOUT)  # fmt: skip
        r.raise_for_status()
        self.interval_s = RegisterResponse.model_validate(r.json()).heartbeat_interval_s
        self.registered.set()

    async def run(self, gate: asyncio.Semaphore) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._stream(gate))
            tg.create_task(self._heartbeats())

    async def _stream(self, gate: asyncio.Semaphore) -> None:
        after, first = "0", True
        while True:
            try:
                async with gate:  # the ramp: a bounded number register at once
                    if not self.registered.is_set():
                        await self.register()
                        self.n.registered += first
                async with aconnect_sse(self.http, "GET", "/api/workers/stream",
                                        headers={**self.headers, "Last-Event-ID": after},
                                        timeout=STREAM_TIMEOUT) as source:  # fmt: skip
                    source.response.raise_for_status()
                    self.n.streaming += 1
                    first = False
                    try:
                        async for event in source.aiter_sse():
                            if event.id:
                                after = event.id
                            if event.event == "job.assign":
                                await self._decline(JobAssign.model_validate_json(event.data))
                    finally:
                        self.n.streaming -= 1
                self.n.drops += 1  # the coordinator ended it: register again
            except (httpx.HTTPError, ValueError) as exc:
                self._fail(exc)
                self.n.drops += not first
            self.registered.clear()
            await asyncio.sleep(1 + random.random())

    async def _heartbeats(self) -> None:
        await self.registered.wait()
        await asyncio.sleep(random.uniform(0, self.interval_s))
        while True:
            await self.registered.wait()
            body = HeartbeatRequest(running=[]).model_dump(mode="json", exclude_none=True)
            try:
                r = await self.http.post("/api/workers/heartbeat", headers=self.headers,
                                         json=body, timeout=REQUEST_TIMEOUT)  # fmt: skip
                if r.status_code in (404, 409):  # it no longer knows us: register again
                    self.registered.clear()
                r.raise_for_status()
                self.n.heartbeats += 1
            except httpx.HTTPError as exc:
                self._fail(exc)
            await asyncio.sleep(self.interval_s)

    async def _decline(self, a: JobAssign) -> None:
        report = AttemptReport(attempt=a.attempt, status="declined",
                               error="simulated worker: it runs no jobs")  # fmt: skip
        r = await self.http.post(f"/api/workers/job/{a.job_id}/status", headers=self.headers,
                                 json=report.model_dump(mode="json", exclude_none=True),
                                 timeout=REQUEST_TIMEOUT)  # fmt: skip
        self.n.declined += r.is_success


async def _create(admin: httpx.AsyncClient, names: list[str], n: Counters) -> list[str]:
    """A token per worker, from the admin API (eight requests in flight)."""
    gate = asyncio.Semaphore(8)

    async def one(name: str) -> str:
        async with gate:
            r = await admin.post("/api/admin/workers", timeout=REQUEST_TIMEOUT,
                                 json={"name": name, "worker_type": "persistent"})  # fmt: skip
            r.raise_for_status()
            n.created += 1
            return str(r.json()["token"])

    return list(await asyncio.gather(*(one(x) for x in names)))


async def _report(n: Counters) -> None:
    while True:
        print(json.dumps(asdict(n)), flush=True)
        await asyncio.sleep(1)


async def main(cfg: dict[str, Any]) -> None:
    raise_fd_limit()
    n = Counters()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    url, count, per_pool = cfg["url"], int(cfg["count"]), int(cfg["per_pool"])
    names = [f"{cfg['prefix']}{i}" for i in range(count)]
    async with asyncio.TaskGroup() as tg:
        reporter = tg.create_task(_report(n))
        headers = {"Authorization": f"Bearer {cfg['admin_key']}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as admin:
            tokens = await _create(admin, names, n)
        # Several workers share one connection pool: its stream and a heartbeat each.
        pools = [
            httpx.AsyncClient(base_url=url, limits=httpx.Limits(
                max_connections=2 * per_pool, max_keepalive_connections=per_pool))
            for _ in range(0, count, per_pool)
        ]  # fmt: skip
        gate = asyncio.Semaphore(int(cfg.get("ramp_in_flight", 16)))
        workers = [SimWorker(pools[i // per_pool], names[i], tokens[i], n) for i in range(count)]
        tasks = [tg.create_task(w.run(gate)) for w in workers]
        await stop.wait()
        for t in [*tasks, reporter]:
            t.cancel()
    for pool in pools:
        with contextlib.suppress(Exception):
            await pool.aclose()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(json.loads(sys.stdin.read())))
