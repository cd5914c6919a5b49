"""An attempt's checkpoints: stored in the coordinator's blob store as the job writes them,
and the newest put back for the job's next attempt to resume from.

``corral.sdk.checkpoint()`` renames each whole checkpoint into the attempt's
``.corral/checkpoints`` (``corral.sdk._checkpoint``); the shipper looks every ``POLL_S``,
packs each new one as a tar, uploads it for the attempt (the coordinator records it only
while the attempt is this worker's), and removes it here. When the job's process has ended,
what is left is shipped before the final report, so a checkpoint written just before the
exit is not lost.

With ``--run-as-users`` the directory is the attempt's user's, who can swap any name in it
at any moment; the worker (root) reads it only by descriptor, never following a link, and
packs only plain files of that user with one link (as ``AttemptFiles`` reads the result),
so a checkpoint cannot carry a file the job could not read itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from corral.model.errors import CorralError, StaleAttempt
from corral.protocol import ArtifactView
from corral.protocol.blobs import sha256_of
from corral.sdk._checkpoint import ENTRY, META
from corral.worker._retry import Verdict, verdict
from corral.worker.packages import DISK_ERRNOS as _DISK_ERRNOS
from corral.worker.packages import unpack
from corral.worker.workdir import CHECKPOINTS, AttemptFiles, NotItsOwn

__all__ = ["POLL_S", "CheckpointShipper", "restore"]

POLL_S = 0.5
_META_BYTES = 64 * 1024
_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# (archive, sha256, step, name) -> the stored record
Put = Callable[[Path, str, int, str], Awaitable[ArtifactView]]


def _read_meta(entry_fd: int) -> dict[str, Any]:
    fd = os.open(META, _NOFOLLOW, dir_fd=entry_fd)
    try:
        data = os.read(fd, _META_BYTES)
    finally:
        os.close(fd)
    meta = json.loads(data)
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise ValueError("meta.json names no step")
    return meta


def _pack(entry_fd: int, out: Path, owner: int | None) -> None:
    """The checkpoint under ``entry_fd`` as a tar at ``out``: its directories and the plain
    files it may carry (see the module's docstring), by descriptor all the way down."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files, dir_fd in os.fwalk(".", dir_fd=entry_fd, follow_symlinks=False):
            rel = "" if top == "." else top.removeprefix("./") + "/"
            for d in sorted(dirs):
                st = os.stat(d, dir_fd=dir_fd, follow_symlinks=False)
                if owner is not None and st.st_uid != owner:
                    dirs.remove(d)
                    continue
                info = tarfile.TarInfo(rel + d)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, st.st_mode & 0o777, st.st_mtime
                tar.addfile(info)
            for name in sorted(files):
                try:
                    fd = os.open(name, _NOFOLLOW, dir_fd=dir_fd)
                except OSError:  # a link (O_NOFOLLOW), or gone
                    continue
                with os.fdopen(fd, "rb") as fh:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    if owner is not None and (st.st_uid != owner or st.st_nlink != 1):
                        continue
                    info = tarfile.TarInfo(rel + name)
                    info.size, info.mode, info.mtime = st.st_size, st.st_mode & 0o777, st.st_mtime
                    tar.addfile(info, fh)


class CheckpointShipper:
    def __init__(self, files: AttemptFiles, put: Put, *, tmp_dir: Path, log: Any) -> None:
        self.files = files
        self.put = put
        self.tmp_dir = tmp_dir
        self.log = log
        self.stored: list[ArtifactView] = []
        self.stale = False  # the attempt is no longer this worker's: nothing more is stored
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        """Until cancelled: ship what is ready, every POLL_S (``flush`` looks at the end).
        Nothing it meets ends it: the job runs on whatever its checkpoints do."""
        while not self.stale:
            await asyncio.sleep(POLL_S)
            try:
                await self.ship()
            except Exception as exc:
                self.log.error("checkpoint.shipper_failed", error=repr(exc))

    async def flush(self, timeout_s: float) -> None:
        """Ship what is left, trying again until ``timeout_s`` has passed (the coordinator
        may be away for a moment)."""
        deadline = time.monotonic() + timeout_s
        try:
            while not self.stale and await self.ship() and time.monotonic() < deadline:  # noqa: ASYNC110 - files appear with no event
                await asyncio.sleep(POLL_S)
        except Exception as exc:
            self.log.error("checkpoint.shipper_failed", error=repr(exc))

    def _any(self) -> bool:
        """Whether the directory holds anything: one entry read, on the loop (the job can put
        a million names there; listing them is a thread's work)."""
        try:
            fd = self.files.open_dir(CHECKPOINTS)
        except (OSError, NotItsOwn):
            return False
        try:
            with os.scandir(fd) as it:
                return next(it, None) is not None
        finally:
            os.close(fd)

    def _ready(self) -> list[tuple[int, int, str]]:
        try:
            fd = self.files.open_dir(CHECKPOINTS)
        except (OSError, NotItsOwn):
            return []
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        return sorted((int(m[1]), int(m[2]), n) for n in names if (m := ENTRY.match(n)))

    async def ship(self) -> int:
        """Store each whole checkpoint found, oldest first; how many are left (failed)."""
        async with self._lock:
            left = 0
            if not self._any():  # nearly always: no hop to a thread for an empty directory
                return 0
            for _, _, entry in await asyncio.to_thread(self._ready):
                if self.stale:
                    break
                if not await self._ship_one(entry):
                    left += 1
            return left

    async def _ship_one(self, entry: str) -> bool:
        """True when the entry is done with (stored, or never to be); False: try later."""
        try:
            fd, tmp = tempfile.mkstemp(prefix="checkpoint-", suffix=".tar", dir=self.tmp_dir)
        except OSError as exc:  # the worker's own disk: the checkpoint waits
            self.log.warning("checkpoint.not_packed", entry=entry, error=str(exc))
            return False
        os.close(fd)
        archive = Path(tmp)
        try:
            try:
                meta = await asyncio.to_thread(self._prepare, entry, archive)
                digest = await asyncio.to_thread(sha256_of, archive)
            except OSError as exc:
                if exc.errno in _DISK_ERRNOS:  # ours, not the job's: try again later
                    self.log.warning("checkpoint.not_packed", entry=entry, error=str(exc))
                    return False
                self.log.warning("checkpoint.unreadable", entry=entry, error=str(exc))
                await asyncio.to_thread(self._remove, entry)
                return True
            except (ValueError, NotItsOwn, RecursionError) as exc:  # the job's making
                self.log.warning("checkpoint.unreadable", entry=entry, error=str(exc))
                await asyncio.to_thread(self._remove, entry)
                return True
            name = str(meta.get("name") or "checkpoint").replace("/", "_")[:300] or "checkpoint"
            try:
                stored = await self.put(archive, digest, meta["step"], name)
            except StaleAttempt:
                self.stale = True
                return True
            except CorralError as exc:
                if verdict(exc) is Verdict.RETRY:  # the coordinator is away: later
                    self.log.warning("checkpoint.not_stored", entry=entry, error=str(exc))
                    return False
                # Refused for good (too large, a bad name, the token): sending it again
                # cannot help, and repacking it every half second costs the disk.
                self.log.error("checkpoint.refused", entry=entry, error=str(exc))
                if verdict(exc) is Verdict.FATAL:
                    self.stale = True
                await asyncio.to_thread(self._remove, entry)
                return True
            self.stored.append(stored)
            self.log.info("checkpoint.stored", step=stored.step, size=stored.size,
                          artifact_id=stored.id)  # fmt: skip
            await asyncio.to_thread(self._remove, entry)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(archive)

    def _prepare(self, entry: str, archive: Path) -> dict[str, Any]:
        cp_fd = self.files.open_dir(CHECKPOINTS)
        try:
            entry_fd = os.open(entry, _DIR, dir_fd=cp_fd)
            try:
                meta = _read_meta(entry_fd)
                _pack(entry_fd, archive, self.files.owner)
            finally:
                os.close(entry_fd)
        finally:
            os.close(cp_fd)
        return meta

    def _remove(self, entry: str) -> None:
        try:
            cp_fd = self.files.open_dir(CHECKPOINTS)
        except (OSError, NotItsOwn):
            return
        try:
            shutil.rmtree(entry, dir_fd=cp_fd, ignore_errors=True)
        finally:
            os.close(cp_fd)


def restore(archive: Path, into: Path) -> None:
    """A stored checkpoint (a tar, as ``_pack`` made it: files and directories only)
    unpacked where ``resume()`` finds it. Blocking."""
    into.mkdir(mode=0o700, exist_ok=True)
    unpack(archive, into, allow_links=False)
