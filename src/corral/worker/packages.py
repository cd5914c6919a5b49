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
import errno
import posixpath
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath

from corral.worker.workdir import CORRAL_DIR

__all__ = ["DISK_ERRNOS", "BadPackage", "Packages", "checked", "unpack"]

Fetch = Callable[[Path], Awaitable[None]]
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.EIO, errno.EROFS}


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


MAX_MEMBERS = 200_000
MAX_UNPACKED = 20 * 1024**3  # bytes of content: a small archive may inflate enormously


def checked(member: tarfile.TarInfo, links: set[str], *, allow_links: bool) -> str:
    """The member's normalized name, if it may be unpacked: never a hard link or a device,
    never through a symbolic link the archive made, never into ``.corral``, never out of the
    directory. (tarfile's ``data`` filter says the same, but some Python releases it ships
    in let crafted links through it.) Raises BadPackage."""
    name = posixpath.normpath(member.name.lstrip("/"))
    parts = PurePosixPath(name).parts
    if not parts or parts[0] in ("..", CORRAL_DIR) or name == ".":
        raise BadPackage(f"it holds {member.name!r}: out of its directory, or the worker's")
    if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
        raise BadPackage(f"{member.name!r} goes through a link the archive made")
    if member.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        if not allow_links or member.linkname.startswith("/") or target.split("/")[0] == "..":
            raise BadPackage(f"{member.name!r} links out of the directory")
        links.add(name)
    elif not (member.isfile() or member.isdir()):
        raise BadPackage(f"{member.name!r} is neither a file, a directory nor a link")
    return name


def unpack(archive: Path, into: Path, *, allow_links: bool = True) -> int:
    """The package's files into the attempt's directory; how many. Blocking: call it in a
    thread. The worker's own disk failing raises OSError (not the package's fault)."""
    members = files = size = 0
    links: set[str] = set()
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                checked(member, links, allow_links=allow_links)
                members += 1
                files += member.isfile()
                size += member.size if member.isfile() else 0
                if members > MAX_MEMBERS or size > MAX_UNPACKED:
                    raise BadPackage(f"it unpacks to more than {MAX_MEMBERS} files or"
                                     f" {MAX_UNPACKED} bytes")  # fmt: skip
                tar.extract(member, into, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise BadPackage(str(exc)) from exc
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise
        raise BadPackage(str(exc)) from exc
    return files
