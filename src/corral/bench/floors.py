"""What this machine allows, measured in the same run as Corral: spawning ``true`` from
asyncio (the floor of a process per job) and one bare FastAPI POST on uvicorn (the floor of
one HTTP call). Corral's figures are printed as a share of these."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from typing import Any

import httpx

from corral.bench._stats import cpu_s, p50_p99, self_cpu_s
from corral.local import free_port


async def spawn_floor(count: int, in_flight: int = 8) -> dict[str, Any]:
    """``true`` spawned and reaped ``count`` times, ``in_flight`` at once."""
    gate = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with gate:
            proc = await asyncio.create_subprocess_exec("true")
            await proc.wait()

    cpu0, t0 = self_cpu_s(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    wall, cpu = time.perf_counter() - t0, self_cpu_s() - cpu0
    return {
        "spawns": count,
        "in_flight": in_flight,
        "per_s": round(count / wall, 1),
        "cpu_ms_per_spawn": round(cpu * 1000 / count, 3),
    }


async def http_floor(requests: int, in_flight: int = 8, sequential: int = 200) -> dict[str, Any]:
    """POSTs to a bare FastAPI app on uvicorn in a child process: ``requests`` with
    ``in_flight`` at once (req/s), then ``sequential`` one at a time (p50/p99)."""
    port = free_port("127.0.0.1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corral.bench._floor_app", str(port)
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    await http.post("/echo", json={})
                    break
                except httpx.TransportError:
                    if proc.returncode is not None or time.monotonic() > deadline:
                        raise RuntimeError("the HTTP floor's server did not start") from None
                    await asyncio.sleep(0.1)
            gate = asyncio.Semaphore(in_flight)

            async def one() -> None:
                async with gate:
                    (await http.post("/echo", json={"n": 1})).raise_for_status()

            server_cpu0, t0 = cpu_s(proc.pid), time.perf_counter()
            await asyncio.gather(*(one() for _ in range(requests)))
            wall = time.perf_counter() - t0
            server_cpu = cpu_s(proc.pid) - server_cpu0
            lat = []
            for _ in range(sequential):
                t = time.perf_counter()
                (await http.post("/echo", json={"n": 1})).raise_for_status()
                lat.append((time.perf_counter() - t) * 1000)
    finally:
        proc.terminate()
        await proc.wait()
    return {
        "requests": requests,
        "in_flight": in_flight,
        "per_s": round(requests / wall, 1),
        "server_cpu_ms_per_request": round(server_cpu * 1000 / requests, 3),
        "sequential_ms": p50_p99(lat),
        "uvloop": importlib.util.find_spec("uvloop") is not None,
        "httptools": importlib.util.find_spec("httptools") is not None,
    }
