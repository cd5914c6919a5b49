"""What a test leaves behind: processes, threads and listening sockets that were not there
before it and are still there once a short grace for winding down has passed."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

GRACE_S = 2.0


@dataclass(frozen=True)
class Snapshot:
    processes: dict[tuple[int, float], str]  # (pid, create time): a pid alone can be reused
    threads: dict[threading.Thread, str]
    listening: dict[tuple[int, str], str]  # (pid, address)


def _describe(proc: psutil.Process) -> str:
    try:
        return f"process {proc.pid} ({' '.join(proc.cmdline())[:200] or proc.name()})"
    except psutil.Error:
        return f"process {proc.pid}"


def _ours(root: Path) -> list[psutil.Process]:
    """This process's descendants, and the processes started since it began that work under
    ``root`` (pytest's temporary folder): a job whose worker was SIGKILLed is orphaned, no
    longer a descendant, and still this test's to stop."""
    me = psutil.Process()
    since = me.create_time()
    found = {p.pid: p for p in me.children(recursive=True)}
    for p in psutil.process_iter(["create_time"]):
        if p.pid in found or p.pid == me.pid or (p.info["create_time"] or 0) < since:
            continue
        try:
            if Path(p.cwd()).is_relative_to(root):
                found[p.pid] = p
        except psutil.Error:
            continue  # gone, or not ours to look at
    alive = []
    for p in found.values():
        try:
            if p.status() != psutil.STATUS_ZOMBIE:  # dead: its parent has yet to reap it
                alive.append(p)
        except psutil.Error:
            continue
    return alive


def snapshot(root: Path) -> Snapshot:
    procs, listening = {}, {}
    owners = [psutil.Process(), *_ours(root)]
    for p in owners:
        try:
            key = (p.pid, p.create_time())
            conns = p.net_connections(kind="inet")
        except psutil.Error:
            continue
        if p.pid != owners[0].pid:
            procs[key] = _describe(p)
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                addr = f"{c.laddr.ip}:{c.laddr.port}"
                listening[(p.pid, addr)] = f"listening socket {addr} (pid {p.pid})"
    threads = {t: f"thread {t.name!r}" for t in threading.enumerate() if t.is_alive()}
    return Snapshot(procs, threads, listening)


def leaked(before: Snapshot, root: Path, grace: float = GRACE_S) -> list[str]:
    """What is new since ``before``, polled until it is gone or ``grace`` has passed."""
    deadline = time.monotonic() + grace
    while True:
        now = snapshot(root)
        left = [
            *(v for k, v in now.processes.items() if k not in before.processes),
            *(v for k, v in now.threads.items() if k not in before.threads),
            *(v for k, v in now.listening.items() if k not in before.listening),
        ]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def kill_new(before: Snapshot, root: Path) -> None:
    """SIGKILL the processes a test left behind, so the next test starts clean."""
    for p in _ours(root):
        try:
            if (p.pid, p.create_time()) not in before.processes:
                p.kill()
        except psutil.Error:
            continue
