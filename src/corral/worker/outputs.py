"""A job's declared outputs (``--output 'model/*.safetensors'``), stored as its artifacts once
it has succeeded.

Each glob is matched (``fnmatch``: ``*`` crosses ``/`` too) against the paths of the files in
the attempt's directory, relative to it; ``.corral`` is the worker's and is never searched.
The directory is walked and each file opened by descriptor, never following a link, and for
an isolated attempt only plain files of its user with one link are taken (as
``AttemptFiles`` reads the result): a job cannot have the worker upload a file it could not
read itself. Each is copied into the worker's own scratch, then uploaded and removed.
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

__all__ = ["MAX_FILES", "Found", "find"]

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


def find(top: int, patterns: list[str], owner: int | None, scratch: Path) -> list[Found]:
    """Copies of the files under the directory ``top`` (a descriptor, which it closes) that
    ``patterns`` match (at most MAX_FILES). Blocking: in a thread. The caller removes the
    copies."""
    found: list[Found] = []
    try:
        for rel, fd in _files(top, owner):
            with os.fdopen(fd, "rb") as src:
                if len(found) >= MAX_FILES or not any(fnmatch.fnmatch(rel, p) for p in patterns):
                    continue
                out, tmp = tempfile.mkstemp(prefix="output-", dir=scratch)
                digest = hashlib.sha256()
                with os.fdopen(out, "wb") as dst:
                    while chunk := src.read(1024 * 1024):
                        digest.update(chunk)
                        dst.write(chunk)
                found.append(Found(rel, Path(tmp), digest.hexdigest()))
    except BaseException:
        for f in found:
            f.copy.unlink(missing_ok=True)
        raise
    finally:
        os.close(top)
    return found
