"""The bootstrap admin key: valid on every start, and only the one given at the last."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import start_coordinator


def test_a_replaced_bootstrap_key_stops_working(tmp_path, db_url):
    first, stop = start_coordinator(tmp_path / "a", db_url)
    old = first.admin_key
    with first.client() as c:
        assert c.get("/api/jobs").status_code == 200
    stop()
    second, stop = start_coordinator(tmp_path / "b", db_url)  # the same store, another key
    try:
        assert second.admin_key != old
        with second.client() as c:
            assert c.get("/api/jobs").status_code == 200
        with second.client(old) as c:
            r = c.get("/api/jobs")
            assert r.status_code == 401, r.text
    finally:
        stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl")
def test_a_running_server_shows_its_bootstrap_key_to_no_job(tmp_path):
    # A job of the same user would read /proc/<server>/environ: the key must be gone from it.
    key = f"ck_{'s' * 40}"
    env = {**os.environ, "CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY": key}
    server = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "server", "--port", "0", "--data-dir",
         str(tmp_path / "d")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        deadline, seen = time.monotonic() + 60, ""
        while "listening" not in seen and time.monotonic() < deadline:
            seen += server.stderr.readline()
        assert "listening" in seen, seen
        # Root may read any /proc file: the value must not be there at all; anyone else
        # must not even be let in (undumpable).
        try:
            seen_env = Path(f"/proc/{server.pid}/environ").read_bytes()
        except PermissionError:
            return
        assert key.encode() not in seen_env
    finally:
        server.terminate()
        server.wait(30)
