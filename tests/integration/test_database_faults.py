"""A database out of reach or a full disk: answers come fast, as 503 with Retry-After, and
the coordinator is ready again once the store is."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from harness import fresh_database, start_coordinator
from harness_e2e import wait_until
from sqlalchemy.engine import make_url

FAST = {"db_statement_timeout_s": 2, "db_pool_timeout_s": 2, "db_connect_timeout_s": 2}


@pytest.fixture
def pg_through_a_proxy(tmp_path: Path) -> Iterator[tuple[str, FaultProxy]]:
    with fresh_database("postgres", tmp_path) as url:
        u = make_url(url)
        proxy = FaultProxy(u.host or "127.0.0.1", u.port or 5432).start()
        try:
            yield u.set(port=proxy.port).render_as_string(hide_password=False), proxy
        finally:
            proxy.stop()


def _timed(fn):
    start = time.monotonic()
    return fn(), time.monotonic() - start


@pytest.mark.postgres
def test_a_black_holed_database_is_a_fast_503_and_recovers(tmp_path, pg_through_a_proxy):
    url, proxy = pg_through_a_proxy
    coord, stop = start_coordinator(tmp_path / "s", url, **FAST)
    try:
        with coord.client() as c:
            assert c.get("/readyz").json()["status"] == "ready"
            proxy.blackhole()
            r, took = _timed(lambda: c.get("/api/jobs", timeout=60))
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "unavailable" and r.headers["retry-after"]
            assert took < 20, took  # the statement timeout and a cancel, not the outage
            ready, took = _timed(lambda: c.get("/readyz", timeout=60))
            assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
            assert took < 30, took
            proxy.restore()
            wait_until(lambda: c.get("/readyz", timeout=60).status_code == 200, 60, "ready")
            assert c.get("/api/jobs").status_code == 200
    finally:
        proxy.restore()
        stop()


@contextlib.contextmanager
def _small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True, capture_output=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_unready_and_acknowledges_no_submit(tmp_path):
    with _small_disk(tmp_path / "disk") as disk:
        coord, stop = start_coordinator(disk / "server", f"sqlite:///{disk / 'corral.db'}")
        try:
            with coord.client() as c:
                assert c.get("/readyz").status_code == 200
                filler = disk / "filler"
                with contextlib.suppress(OSError), filler.open("wb") as fh:
                    while True:
                        fh.write(b"\0" * 65536)
                ready = c.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.json()["checks"]["data_dir"] != "ok"
                before = len(c.get("/api/jobs").json()["jobs"])
                for _ in range(20):  # a write that fits in a page already there may pass
                    r = c.post("/api/queue/submit", json={"command": ["x" * 2000]})
                    assert r.status_code in (201, 503), r.text
                    if r.status_code == 503:
                        break
                assert r.status_code == 503 and r.headers["retry-after"]
                accepted = sum(1 for j in c.get("/api/jobs").json()["jobs"])
                filler.unlink()
                wait_until(lambda: c.get("/readyz").status_code == 200, 30, "ready again")
                # every submit that was acknowledged is there, none that was refused
                assert len(c.get("/api/jobs").json()["jobs"]) == accepted >= before
        finally:
            stop()
