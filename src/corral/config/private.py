"""Data directories and the files in them are their owner's alone: a coordinator's holds its
database (every token's hash, every job's secrets in its environment), a worker's holds its
journal and its jobs' output."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["private_dir", "private_file", "write_whole"]


def private_dir(path: Path) -> Path:
    """``path``, made if missing with mode 0700 (parents as usual). A directory that exists
    is left as it is: it may be one the user shares on purpose (``.``)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)  # mkdir's mode goes through the umask
    return path


def private_file(path: Path) -> Path:
    """``path`` created empty with mode 0600 if missing, before a library creates it with
    the umask's (SQLite gives its -wal and -shm files the mode of the database file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    return path


def write_whole(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Written whole or not at all: a file beside it (``mode`` from its creation), synced,
    then renamed over it. A crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # whatever the umask took away
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
