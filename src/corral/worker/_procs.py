"""Process-group helpers. Every attempt leads its own group, so one signal reaches all of it.

Zombies count as gone: where PID 1 does not reap (some containers), a dead grandchild stays a
zombie for ever, and ``kill(pid, 0)`` still succeeds on it.
"""

from __future__ import annotations

import os
import signal

import psutil  # type: ignore[import-untyped]

__all__ = ["create_time", "group_is_ours", "group_members", "leader_alive", "signal_group"]

# psutil derives start times from boot time and clock ticks; allow for rounding.
_CREATE_TIME_SLACK_S = 1.0


def _safe_pgid(pgid: int) -> bool:
    # A bad journal row must never turn into killpg(0) (our own group) or killpg(1).
    return pgid > 1 and pgid != os.getpgrp()


def create_time(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def leader_alive(pid: int, started: float) -> bool:
    """Is ``pid`` still the process we started (not exited, not a reused pid)?"""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return bool(abs(proc.create_time() - started) <= _CREATE_TIME_SLACK_S)
    except psutil.Error:
        return False


def group_is_ours(pgid: int, leader_started: float) -> bool:
    """May group ``pgid`` (whose leader has exited) still be the one we started?

    While a group has members the kernel gives no new process its id, so if nobody holds the
    pid, or our leader's zombie does, the group is ours; a live stranger with that pid means
    our group died out and the id was handed on.
    """
    try:
        proc = psutil.Process(pgid)
        return bool(abs(proc.create_time() - leader_started) <= _CREATE_TIME_SLACK_S)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in group ``pgid``."""
    if not _safe_pgid(pgid):
        return []
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # someone else's group now, or ours under another uid: look closer
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return members


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the whole group; False if there was no one to send it to."""
    if not _safe_pgid(pgid):
        return False
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
