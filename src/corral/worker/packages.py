"""Jobs' packed working directories, fetched once per worker and unpacked for each attempt.

A package is named by its SHA-256 (``corral submit --workdir``), so the copy in
``<work_dir>/packages`` is the package for every job that names it: the second attempt, and
any job submitted from the same directory, starts without a download. Attempts that need one
package at the same moment fetch it once (a lock per digest). A download is checked against
its name before it is kept.

Unpacking refuses what could reach outside the attempt's directory (tarfile's ``data``
filter: no ``..``, no links out, no devices; a leading ``/`` is dropped) and anything under
``.corral/``, the worker's own files of the attempt.
"""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath

from corral.worker.workdir import CORRAL_DIR

__all__ = ["BadPackage", "Packages", "unpack"]

Fetch = Callable[[Path], Awaitable[None]]


class BadPackage(Exception):
    """The package cannot be unpacked as a working directory."""


class Packages:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, digest: str) -> Path:
        return self.root / f"{digest}.tar.gz"

    async def get(self, digest: str, fetch: Fetch) -> tuple[Path, bool]:
        """The package on this disk, fetched into place by ``fetch(path)`` if it is not
        yet: (its path, whether it was fetched now)."""
        path = self.path(digest)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if await asyncio.to_thread(path.is_file):
                return path, False
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
            await fetch(path)
            return path, True


def unpack(archive: Path, into: Path) -> int:
    """The package's files into the attempt's directory; how many. Blocking: call it in a
    thread."""
    count = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = [p for p in PurePosixPath(member.name).parts if p not in ("/", ".")]
                if parts and parts[0] == CORRAL_DIR:
                    raise BadPackage(f"it holds {member.name}: {CORRAL_DIR}/ is the worker's")
                tar.extract(member, into, filter="data")
                count += member.isfile()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadPackage(str(exc)) from exc
    return count
