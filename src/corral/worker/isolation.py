"""Each attempt as a Unix user of its own: ``corral worker --run-as-users 20000-20031``,
with the worker running as root.

An attempt takes a free uid of the range for as long as it runs: its directory is made its
own (0700), its process runs as that uid and group with no other groups, and its ``HOME``
is its directory. So it cannot read or write another attempt's files (their output, their
``result.json``), the worker's journal or data (root's, 0600 and 0700), or signal another
attempt's processes. What the worker reads of an attempt it reads by descriptor, never by a
name the attempt's user could point elsewhere (``workdir.AttemptFiles``). When the attempt
ends, every process of its uid is killed before the uid is handed to another attempt:
nothing it started (a daemon in a session of its own, a process that changed its name)
outlives it.

The first uid of the range is the call user: the warm interpreters of ``call`` tasks run
as it, apart from the worker and from command jobs, though not from each other (an
interpreter is kept warm for the next task of its job family on purpose).

The users need no entry in /etc/passwd. The data directory's parents must be traversable
by them (``/var/lib/corral``, not a 0700 home): the worker checks at its start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

__all__ = ["NoFreeUser", "Users", "as_user", "parse_range"]

KILL_WAIT_S = 5.0


class NoFreeUser(Exception):
    """Every uid of the range is held by a running attempt."""


def parse_range(text: str) -> range:
    """``"20000-20031"`` -> range(20000, 20032)."""
    lo, sep, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi if sep else lo)
    except ValueError:
        raise ValueError(f"expected FIRST-LAST uids, like 20000-20031, got {text!r}") from None
    if not 1000 <= first <= last < 2**31 - 1:
        raise ValueError(f"uids {text!r}: FIRST-LAST with 1000 <= FIRST <= LAST")
    return range(first, last + 1)


@dataclass
class Users:
    uids: range
    _busy: set[int] = field(default_factory=set)

    @property
    def call_user(self) -> int:
        return self.uids[0]

    @property
    def attempt_uids(self) -> range:
        return self.uids[1:]

    def take(self) -> int:
        for uid in self.attempt_uids:
            if uid not in self._busy:
                self._busy.add(uid)
                return uid
        raise NoFreeUser(f"all {len(self.attempt_uids)} attempt users are busy")

    def hold(self, uid: int) -> None:
        """An attempt adopted after a restart keeps the uid it ran as."""
        self._busy.add(uid)

    async def release(self, uid: int) -> int:
        """Kill every process of ``uid``, then free it; returns how many were killed."""
        killed = await asyncio.to_thread(kill_user, uid)
        self._busy.discard(uid)
        return killed

    def owner_of(self, workdir: Path) -> int | None:
        """The uid an attempt's directory was handed to, if one of ours."""
        try:
            uid = workdir.stat().st_uid
        except OSError:
            return None
        return uid if uid in self.attempt_uids else None


def as_user(uid: int | None) -> dict[str, Any]:
    """The arguments that start a process as ``uid`` (and its group, no other groups)."""
    return {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}


def hand_over(workdir: Path, uid: int) -> None:
    """The attempt's directory and what is in it become ``uid``'s, 0700. The directory itself
    goes last: until then it is root's and 0700, so nothing of ``uid`` (the call user's
    interpreters run on) can reach in to swap a name as the walk goes."""
    workdir.chmod(0o700)
    for root, dirs, files in os.walk(workdir):
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), uid, uid)
    os.chown(workdir, uid, uid)


def open_path(work_dir: Path, attempts: Path) -> str | None:
    """Make the worker's own directories traversable (0711: no listing) so an attempt reaches
    its directory; returns why the parents above cannot be traversed, or None."""
    for d in (work_dir, attempts):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o711)
    for parent in work_dir.resolve().parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return f"{parent} is not traversable by other users (chmod o+x, or choose --data-dir)"
    return None


def kill_user(uid: int) -> int:
    """SIGKILL every process whose real or effective uid is ``uid``, until none is left."""
    killed: set[int] = set()
    loop_end = time.monotonic() + KILL_WAIT_S
    while True:
        found = [p for p in psutil.process_iter(["uids"])
                 if p.info["uids"] is not None and uid in (p.info["uids"].real,
                                                           p.info["uids"].effective)]  # fmt: skip
        if not found or time.monotonic() > loop_end:
            return len(killed)
        for p in found:
            try:
                os.kill(p.pid, signal.SIGKILL)
                killed.add(p.pid)
            except ProcessLookupError:
                pass
        psutil.wait_procs(found, timeout=0.5)
