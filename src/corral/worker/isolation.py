"""Each attempt as a Unix user of its own: ``corral worker --run-as-users 20000-20031``,
with the worker running as root.

An attempt takes a free uid of the range for as long as it runs: its directory is made its
own (0700), its process runs as that uid and group with no other groups, and its ``HOME``
is its directory. So it cannot read or write another attempt's files (their output, their
``result.json``), the worker's journal or data (root's, 0600 and 0700), or signal another
attempt's processes. What the worker reads of an attempt it reads by descriptor, never by a
name the attempt's user could point elsewhere (``workdir.AttemptFiles``).

A uid is one attempt's at a time. When the attempt ends, every process of its uid is killed,
and the uid is given to no other attempt until none is left (swept again in the background
while some are): nothing it started (a daemon in a session of its own, a process that
changed its name) outlives it, and its directory is then taken back (root's, 0700), so that
the uid's next attempt cannot read it. At its start a worker sweeps every uid it will use
but those of the attempts it adopts. Two workers on one host never share a uid: each holds
an exclusive lock (``flock``) per uid in a root-only directory (``LOCK_DIR``), takes only
uids no other worker holds (the first free ones of its range, one per slot and one for
calls), and exits 2 at its start when its range has too few left.

The first uid it holds is the call user: the warm interpreters of ``call`` tasks run as
it, apart from the worker and from command jobs, though not from each other (an
interpreter is kept warm for the next task of its job family on purpose).

The users need no entry in /etc/passwd. The data directory's parents must be traversable
by them (``/var/lib/corral``, not a 0700 home): the worker checks at its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import stat
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import structlog

__all__ = ["NoFreeUser", "Users", "UsersUnavailable", "as_user", "parse_range"]

log = structlog.get_logger("corral.worker.users")

KILL_WAIT_S = 5.0  # one sweep: SIGKILL, and again, for this long
RESWEEP_S = 5.0  # a uid some process of which survived a sweep is swept again this often
# Root's alone, on a tmpfs that a reboot empties: shared by every worker on the host,
# whatever its data directory.
LOCK_DIR = Path("/run/corral/uids")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NoFreeUser(Exception):
    """Every uid this worker holds is in use by an attempt, or still has processes left."""


class UsersUnavailable(Exception):
    """Too few uids of the range are free on this host, or their locks cannot be taken."""


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
    """The uids this worker holds (locked), from ``claim``."""

    call_user: int
    attempt_uids: list[int]
    _locks: dict[int, int] = field(default_factory=dict)  # uid -> its lock's descriptor
    _busy: set[int] = field(default_factory=set)  # an attempt's, or processes of it left
    _sweeps: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def claim(cls, uids: range, count: int, *, prefer: Collection[int] = (),
              lock_dir: Path = LOCK_DIR) -> Users:  # fmt: skip
        """Lock ``count`` uids of ``uids`` that no other worker on this host holds: those in
        ``prefer`` (the attempts it will adopt ran as them) first, then the lowest. Raises
        UsersUnavailable."""
        try:
            dir_fd = _lock_dir(lock_dir)
        except OSError as exc:
            raise UsersUnavailable(f"cannot keep uid locks in {lock_dir}: {exc}") from exc
        locks: dict[int, int] = {}
        held = 0
        try:
            for uid in [*(u for u in uids if u in prefer), *(u for u in uids if u not in prefer)]:
                if len(locks) == count:
                    break
                if (fd := _lock(dir_fd, uid)) is None:
                    held += 1
                else:
                    locks[uid] = fd
        except OSError as exc:
            for fd in locks.values():
                os.close(fd)
            raise UsersUnavailable(f"cannot lock a uid in {lock_dir}: {exc}") from exc
        finally:
            os.close(dir_fd)
        if len(locks) < count:
            for fd in locks.values():
                os.close(fd)
            raise UsersUnavailable(
                f"--run-as-users {uids[0]}-{uids[-1]}: {held} of its uids are held by another"
                f" worker on this host, {len(locks)} are free: this worker needs {count} (one per"
                " slot and one for calls); give each worker on a host a range of its own"
            )
        call = min((u for u in locks if u not in prefer), default=min(locks))
        return cls(call, sorted(u for u in locks if u != call), locks)

    async def start(self, adopted: Iterable[int]) -> None:
        """Before any uid is given out: every process of a uid not ``adopted`` is killed (a
        previous worker's leftovers, attempts it dropped); one that will not empty waits."""
        keep = set(adopted) & set(self.attempt_uids)
        self._busy |= keep
        sweep = [u for u in (self.call_user, *self.attempt_uids) if u not in keep]
        killed, left = await asyncio.to_thread(kill_users, sweep)
        if killed:
            log.info("uids.swept", processes=killed)
        for uid in left:
            self._wait_empty(uid, None)

    def take(self) -> int:
        for uid in self.attempt_uids:
            if uid not in self._busy:
                self._busy.add(uid)
                return uid
        raise NoFreeUser(f"all {len(self.attempt_uids)} attempt users are busy")

    def hold(self, uid: int) -> bool:
        """An attempt adopted after a restart keeps the uid it ran as, if this worker holds it."""
        if uid not in self.attempt_uids:
            return False
        self._busy.add(uid)
        return True

    async def release(self, uid: int, workdir: Path | None = None) -> int:
        """Kill every process of ``uid``; once none is left, take ``workdir`` back and free
        the uid (in the background, swept again, while some are). Returns how many were
        killed."""
        killed, left = await asyncio.to_thread(kill_users, [uid])
        if left:
            self._wait_empty(uid, workdir)
        else:
            self._free(uid, workdir)
        return killed

    def owner_of(self, workdir: Path) -> int | None:
        """The uid an attempt's directory was handed to, if one of ours."""
        try:
            uid = workdir.stat().st_uid
        except OSError:
            return None
        return uid if uid in self.attempt_uids else None

    async def close(self) -> None:
        """At the worker's exit: a uid still being swept is swept by the next start."""
        for task in self._sweeps:
            task.cancel()
        if self._sweeps:
            await asyncio.wait(set(self._sweeps), timeout=10)
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()

    def _free(self, uid: int, workdir: Path | None) -> None:
        if workdir is not None:
            take_back(workdir)
        self._busy.discard(uid)

    def _wait_empty(self, uid: int, workdir: Path | None) -> None:
        self._busy.add(uid)
        hint = "processes of it survived SIGKILL: it goes to no attempt until none is left"
        log.warning("uid.not_empty", uid=uid, hint=hint)
        task = asyncio.create_task(self._sweep_until_empty(uid, workdir), name=f"sweep {uid}")
        self._sweeps.add(task)
        task.add_done_callback(self._sweeps.discard)

    async def _sweep_until_empty(self, uid: int, workdir: Path | None) -> None:
        while True:
            await asyncio.sleep(RESWEEP_S)
            _, left = await asyncio.to_thread(kill_users, [uid])
            if not left:
                log.info("uid.empty", uid=uid)
                self._free(uid, workdir)
                return


def _lock_dir(path: Path) -> int:
    """``path``'s descriptor, made where missing (0700); every step must be a directory that
    only root can change, not a link: another user must not place or hold a uid's lock."""
    fd = os.open("/", _DIR)
    try:
        for part in path.parts[1:]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=fd)
            step = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = step
            st = os.fstat(fd)
            if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise PermissionError(f"{part} is not root's alone (uid {st.st_uid}, "
                                      f"mode {stat.filemode(st.st_mode)})")  # fmt: skip
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock(dir_fd: int, uid: int) -> int | None:
    """The lock of ``uid``, taken (its descriptor, held for as long as the worker uses the
    uid); None when another worker holds it."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(f"uid-{uid}.lock", flags, 0o600, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


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


def take_back(workdir: Path) -> None:
    """Once nothing of its user is left: the attempt's directory becomes root's, 0700, so the
    next attempt of that uid cannot read what this one left (the worker keeps it for a look
    after the fact). Only the directory itself, which sits in root's ``attempts/``: no name
    its user controls is followed."""
    try:
        fd = os.open(workdir, _DIR)
    except OSError:
        return  # pruned already
    try:
        os.fchmod(fd, 0o700)
        os.fchown(fd, 0, 0)
    finally:
        os.close(fd)


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


def kill_users(uids: Collection[int], wait_s: float = KILL_WAIT_S) -> tuple[int, set[int]]:
    """SIGKILL every process whose real, effective or saved uid is one of ``uids``, again
    and again for ``wait_s``; returns how many were killed and the uids some process of
    which is still left. Zombies count as gone (see ``_procs``): they run nothing."""
    wanted = set(uids)
    killed: set[int] = set()
    loop_end = time.monotonic() + wait_s
    while True:
        found: dict[int, psutil.Process] = {}
        left: set[int] = set()
        for p in psutil.process_iter(["uids", "status"]):
            ids = p.info["uids"]
            if ids is None or p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            hit = wanted & {ids.real, ids.effective, ids.saved}
            if hit:
                found[p.pid] = p
                left |= hit
        if not found or time.monotonic() > loop_end:
            return len(killed), left
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        psutil.wait_procs(list(found.values()), timeout=0.5)
