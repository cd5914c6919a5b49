"""``--compare``: the same workloads on Ray and on Celery (with Redis), each in a process of
its own, when installed (``pip install 'corral[bench]'``)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from typing import Any

PEERS = {
    "ray": ("ray", "corral.bench._ray_peer"),
    "celery": ("celery", "corral.bench._celery_peer"),
}


async def peer(name: str, tasks: int, roundtrips: int, process_tasks: int,
               timeout_s: float = 600) -> dict[str, Any]:  # fmt: skip
    """The figures of ``name``, or ``{"skipped": why}``."""
    if name not in PEERS:
        return {"skipped": f"unknown peer {name!r} (known: {', '.join(PEERS)})"}
    module, driver = PEERS[name]
    if importlib.util.find_spec(module) is None:
        return {"skipped": f"{name} is not installed (pip install 'corral[bench]')"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", driver,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    cfg = {"tasks": tasks, "roundtrips": roundtrips, "process_tasks": process_tasks}
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(cfg).encode()), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"skipped": f"{name} did not finish within {timeout_s:.0f}s"}
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line.removeprefix("RESULT ")))
    tail = err.decode(errors="replace").strip().splitlines()[-3:]
    return {"skipped": f"{name} failed (exit {proc.returncode}): {' | '.join(tail)}"}
