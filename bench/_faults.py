"""The faults the chaos benchmark injects, on real processes, and the state of one run.

Each fault is recorded with when it began and ended (wall clock), so the report can say
what a loss happened after and how long the fleet took to make progress again. A fault
that heals by itself (a link restored, a coordinator thawed, a disk freed) heals on a
timer thread: the run's own API calls may hang on a frozen coordinator meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultproxy import FaultProxy
from harness_e2e import ADMIN_KEY, Fleet, Proc

KINDS = ("kill", "cut", "restart", "freeze", "db-cut", "disk-full", "flood")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Worker:
    name: str
    worker_id: str
    token: str
    proxy: FaultProxy | None
    enrolled: bool = False  # it enrols with a certificate (an API key) and signs its requests
    disk: Path | None = None  # its data directory, on a small tmpfs of its own
    proc: Proc | None = None
    cut: bool = False
    killed: bool = False
    full: bool = False


@dataclass
class Coordinator:
    port: int
    proc: Proc | None = None
    frozen: bool = False


@dataclass
class Run:
    """The state of one chaos run; the fault loop, the submitters and the timers share it."""

    fleet: Fleet
    server_env: dict[str, str]
    slots: int
    heartbeat: float
    rng: random.Random
    runs_dir: Path
    db_proxy: FaultProxy | None = None
    t0: float = field(default_factory=time.monotonic)
    workers: list[Worker] = field(default_factory=list)
    coordinators: list[Coordinator] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    kills: list[tuple[str, datetime]] = field(default_factory=list)  # (worker_id, when)
    specs: list[tuple[str, float]] = field(default_factory=list)  # (token, seconds) to run
    job_ids: dict[str, str] = field(default_factory=dict)  # token -> job id
    submit_retries: int = 0
    crashes: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    timers: list[threading.Timer] = field(default_factory=list)

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def urls(self) -> str:
        return ",".join(f"http://127.0.0.1:{c.port}" for c in self.coordinators)

    def soon(self, delay: float, fn: Callable[[], None]) -> None:
        """Heal on a timer thread: not from the fault loop, whose API calls may be waiting on
        a frozen coordinator meanwhile."""
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def heal_everything(self) -> None:
        """Run every pending heal now (the chaos is over)."""
        for timer in self.timers:
            if timer.is_alive():
                timer.cancel()
                timer.function(*timer.args, **timer.kwargs)
        self.timers = [t for t in self.timers if t.is_alive()]

    def record(self, kind: str, target: str = "", **detail: Any) -> dict[str, Any]:
        fault: dict[str, Any] = {
            "t": self.now(),
            "fault": kind,
            "target": target,
            "start": utcnow(),
            "end": None,
            **detail,
        }
        with self.lock:
            self.faults.append(fault)
        return fault

    @staticmethod
    def ended(fault: dict[str, Any] | None) -> None:
        if fault is not None and fault["end"] is None:
            fault["end"] = utcnow()

    # --- processes ----------------------------------------------------------------------

    def start_coordinator(self, c: Coordinator) -> None:
        c.proc = self.fleet.start_server(port=c.port, **self.server_env)

    def start_worker(self, w: Worker) -> None:
        urls = (
            self.urls() if w.proxy is None else ",".join([w.proxy.url, *self.urls().split(",")[1:]])
        )
        # An enrolled worker takes over the row made for its name: the same worker id.
        creds = {"CORRAL_WORKER__API_KEY": ADMIN_KEY} if w.enrolled else {}
        w.proc = self.fleet.start_worker(
            w.name,
            token=None if w.enrolled else w.token,
            url=urls,
            slots=self.slots,
            heartbeat=self.heartbeat,
            data_dir=w.disk,
            **creds,
        )
        w.killed = False

    def check_workers(self) -> None:
        """A worker that exited without being killed is a finding: note it, start it again."""
        for w in self.workers:
            if w.proc and not w.killed and not w.proc.alive():
                self.crashes.append(
                    {"t": self.now(), "worker": w.name, "exit_code": w.proc.popen.returncode}
                )
                self.start_worker(w)

    # --- faults: each returns False when it cannot be injected now -------------------------

    def kill(self) -> bool:
        """SIGKILL a worker (its jobs are orphaned, as in a crash); start it again soon."""
        live = [w for w in self.workers if w.proc and w.proc.alive()]
        if not live:
            return False
        w = self.rng.choice(live)
        assert w.proc is not None
        back = round(self.rng.uniform(0.5, 3.0), 2)
        fault = self.record("kill", w.name, restart_after_s=back)
        w.proc.kill9()
        w.killed = True
        self.kills.append((w.worker_id, fault["start"]))

        def again() -> None:  # once, whether its timer or the end of the chaos runs it
            with self.lock:
                if w.killed:
                    self.start_worker(w)
            self.ended(fault)

        self.soon(back, again)
        return True

    def cut(self) -> bool:
        """Cut a proxied worker's link for a few seconds: no error, the network is gone."""
        free = [w for w in self.workers if w.proxy and not w.cut and w.proc and w.proc.alive()]
        if not free:
            return False
        w = self.rng.choice(free)
        assert w.proxy is not None
        length = round(self.rng.uniform(0.5, 6.0), 2)
        fault = self.record("cut", w.name, cut_s=length)
        w.proxy.cut()
        w.cut = True

        def restore() -> None:
            if w.proxy and w.cut:
                w.proxy.restore()
                w.cut = False
            self.ended(fault)

        self.soon(length, restore)
        return True

    def restart(self) -> bool:
        """SIGKILL a coordinator and start it again on the same store and port."""
        live = [c for c in self.coordinators if c.proc and not c.frozen]
        if not live:
            return False
        c = self.rng.choice(live)
        assert c.proc is not None
        down = round(self.rng.uniform(0.3, 2.0), 2)
        fault = self.record("restart", f":{c.port}", down_s=down)
        c.proc.kill9()
        time.sleep(down)
        self.start_coordinator(c)
        self.ended(fault)
        return True

    def freeze(self) -> bool:
        """SIGSTOP a coordinator past the heartbeat timeout, then SIGCONT it: time it could
        not act must not count as its workers' silence."""
        live = [c for c in self.coordinators if c.proc and c.proc.alive() and not c.frozen]
        if not live:
            return False
        c = self.rng.choice(live)
        assert c.proc is not None
        timeout = float(self.server_env["CORRAL_SERVER__HEARTBEAT_TIMEOUT_S"])
        length = round(self.rng.uniform(0.5 * timeout, 2.0 * timeout), 2)
        fault = self.record("freeze", f":{c.port}", frozen_s=length)
        os.kill(c.proc.pid, signal.SIGSTOP)
        c.frozen = True
        self.soon(length, lambda: self._thaw(c, fault))
        return True

    def _thaw(self, c: Coordinator, fault: dict[str, Any] | None) -> None:
        if c.frozen and c.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.proc.pid, signal.SIGCONT)
            c.frozen = False
        self.ended(fault)

    def db_cut(self) -> bool:
        """Black-hole the link to PostgreSQL for a few seconds: every statement hangs."""
        if self.db_proxy is None or any(
            f["fault"] == "db-cut" and f["end"] is None for f in self.faults
        ):
            return False
        length = round(self.rng.uniform(1.0, 6.0), 2)
        fault = self.record("db-cut", "postgresql", cut_s=length)
        self.db_proxy.blackhole()

        def restore() -> None:
            assert self.db_proxy is not None
            self.db_proxy.restore()
            self.ended(fault)

        self.soon(length, restore)
        return True

    def disk_full(self) -> bool:
        """Fill a worker's data directory for a few seconds: it must run nothing it cannot
        record, say why, and take work again once it has room."""
        free = [w for w in self.workers if w.disk is not None and not w.full]
        if not free:
            return False
        w = self.rng.choice(free)
        length = round(self.rng.uniform(2.0, 8.0), 2)
        fault = self.record("disk-full", w.name, full_s=length)
        w.full = True
        assert w.disk is not None
        with contextlib.suppress(OSError), (w.disk / "filler").open("wb") as fh:
            while True:
                fh.write(b"\0" * (1 << 20))
        self.soon(length, lambda: self._free(w, fault))
        return True

    def _free(self, w: Worker, fault: dict[str, Any] | None) -> None:
        if w.full and w.disk is not None:
            (w.disk / "filler").unlink(missing_ok=True)
            w.full = False
        self.ended(fault)

    def flood(self, count: int, submit: Callable[[str, float], None]) -> bool:
        """A burst of short jobs, submitted as fast as the coordinator takes them."""
        fault = self.record("flood", "", jobs=count)
        tokens = [
            (f"flood{len(self.specs)}x{i:05d}x{os.urandom(3).hex()}", 0.01) for i in range(count)
        ]
        with self.lock:
            self.specs.extend(tokens)

        def burst() -> None:
            for token, secs in tokens:
                submit(token, secs)
            self.ended(fault)

        threading.Thread(target=burst, name="flood", daemon=True).start()
        return True


def mount_disks(root: Path, names: list[str], size: str = "64m") -> dict[str, Path]:
    """A small tmpfs per worker for its data directory (root only); {} where that cannot be."""
    if os.geteuid() != 0:
        return {}
    disks = {}
    for name in names:
        path = root / f"disk-{name}"
        path.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
        if r.returncode != 0:
            unmount_disks(disks)
            print(
                f"no disk-full faults: cannot mount a tmpfs ({r.stderr.decode().strip()})",
                file=sys.stderr,
            )
            return {}
        disks[name] = path
    return disks


def unmount_disks(disks: dict[str, Path]) -> None:
    for path in disks.values():
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
