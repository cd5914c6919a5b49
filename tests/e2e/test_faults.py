"""Faults on the coordinator's side: time it could not act is not the workers' silence."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from harness_e2e import wait_until

PY = sys.executable


def _job_until(flag: str) -> list[str]:
    code = f"import os, time\nwhile not os.path.exists({flag!r}): time.sleep(0.05)\n"
    return [PY, "-c", code]


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_a_frozen_coordinator_does_not_kill_healthy_work(fleet, tmp_path):
    # Frozen (SIGSTOP) past the heartbeat timeout: when it thaws, its workers spoke all
    # along, it just could not listen. Their running job must go on as attempt 1.
    server = fleet.start_server(CORRAL_SERVER__HEARTBEAT_TIMEOUT_S="3",
                                CORRAL_SERVER__REAPER_INTERVAL_S="0.3")  # fmt: skip
    fleet.start_worker("a", heartbeat=0.5)
    flag = tmp_path / "go"
    job = fleet.submit(_job_until(str(flag)))
    fleet.wait_state(job["id"], {"running"})
    os.kill(server.pid, signal.SIGSTOP)
    try:
        time.sleep(8)  # well past the 3 s timeout
    finally:
        os.kill(server.pid, signal.SIGCONT)
    wait_until(lambda: fleet.workers()["a"]["status"] in ("busy", "idle"), 10, "the worker")
    time.sleep(2)  # a few reaper ticks after the thaw
    flag.touch()
    done = fleet.wait_state(job["id"], {"succeeded", "failed"}, 30)
    assert done["state"] == "succeeded", done
    assert [a["outcome"] for a in done["attempts"]] == ["succeeded"], done["attempts"]
    assert "coordinator.resumed" in server.output()
