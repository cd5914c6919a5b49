"""A job's declared outputs (``--output 'model/*.safetensors'``), stored as its artifacts once
it has succeeded.

Each glob is matched (``fnmatch``: ``*`` crosses ``/`` too) against the paths of the files in
the attempt's directory, relative to it; ``.corral`` is the worker's and is never searched.
The directory is walked and each file opened by descriptor, never following a link, and for
an isolated attempt only plain files of its user with one link are taken (as
``AttemptFiles`` reads the result): a job cannot have the worker upload a file it could not
read itself. Each is copied into the worker's own scratch, uploaded and removed before the
next is copied, so the scratch holds one output at a time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from corral.worker.workdir import CORRAL_DIR

__all__ = ["MAX_FILES", "Found", "copy", "matches"]

MAX_FILES = 1000
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Found:
    """One output copied into the worker's scratch, with its SHA-256."""

    def __init__(self, name: str, copy: Path, digest: str) -> None:
        self.name, self.copy, self.digest = name, copy, digest


def _files(top: int, owner: int | None) -> Iterator[tuple[str, int]]:
    """(relative path, open descriptor) of each file it may take, sorted by path."""
    for root, dirs, files, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
        rel = "" if root == "." else root.removeprefix("./") + "/"
        if not rel:
            dirs[:] = [d for d in dirs if d != CORRAL_DIR]
        dirs.sort()
        for name in sorted(files):
            try:
                fd = os.open(name, _FILE, dir_fd=dir_fd)
            except OSError:  # a link (O_NOFOLLOW), or gone
                continue
            st = os.fstat(fd)
            mine = owner is None or (st.st_uid == owner and st.st_nlink == 1)
            if stat.S_ISREG(st.st_mode) and mine:
                yield rel + name, fd
            else:
                os.close(fd)


def matches(top: int, patterns: list[str], owner: int | None) -> list[str]:
    """The paths under the directory ``top`` (a descriptor, which it closes) of the files it
    may take that ``patterns`` match, at most MAX_FILES. Blocking: in a thread."""
    found: list[str] = []
    try:
        for rel, fd in _files(top, owner):
            os.close(fd)
            if len(found) < MAX_FILES and any(fnmatch.fnmatch(rel, p) for p in patterns):
                found.append(rel)
    finally:
        os.close(top)
    return found


def copy(top: int, rel: str, owner: int | None, scratch: Path) -> Found | None:
    """A copy of ``rel`` under ``top`` (which it closes) in the worker's scratch, each part of
    the path opened without following a link, the file checked as ``_files`` checks it;
    None when it is no longer there or no longer the attempt user's. Blocking."""
    fds = [top]
    try:
        *dirs, name = rel.split("/")
        for d in dirs:
            fds.append(os.open(d, _DIR, dir_fd=fds[-1]))
        fd = os.open(name, _FILE, dir_fd=fds[-1])
    except OSError:
        return None
    finally:
        for d_fd in fds:
            os.close(d_fd)
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        mine = owner is None or (st.st_uid == owner and st.st_nlink == 1)
        if not stat.S_ISREG(st.st_mode) or not mine:
            return None
        out, tmp = tempfile.mkstemp(prefix="output-", dir=scratch)
        digest = hashlib.sha256()
        try:
            with os.fdopen(out, "wb") as dst:
                while chunk := src.read(1024 * 1024):
                    digest.update(chunk)
                    dst.write(chunk)
        except BaseException:
            os.unlink(tmp)
            raise
    return Found(rel, Path(tmp), digest.hexdigest())
