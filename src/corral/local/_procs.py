"""Ports and child processes of a local fleet."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import IO

from corral.config.harden import PARENT_ENV
from corral.local.errors import FleetError

# The `corral` command, as a child process (its public entry point; nothing is imported).
CORRAL = [sys.executable, "-m", "corral.cli"]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As asyncio's server does, so a port in TIME_WAIT counts as free here too.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def ensure_free(host: str, port: int, *, hint: str = "--port") -> None:
    """FleetError, in one line, where uvicorn would say "port in use" with a traceback."""
    if port == 0:
        return
    try:
        _bind(host, port).close()
    except OSError as exc:
        raise FleetError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            f"(another coordinator? pick another with {hint})"
        ) from None


def free_port(host: str) -> int:
    with _bind(host, 0) as sock:
        return int(sock.getsockname()[1])


async def spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    """A child in its own process group (a terminal's Ctrl-C reaches it only through us),
    its output appended to ``log_path``; it stops if we die (``harden.follow_parent``)."""
    log = _open_append(log_path)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env={**env, PARENT_ENV: str(os.getpid())},
            process_group=0,
        )
    finally:
        log.close()  # the child has its own copy


def _open_append(path: Path) -> IO[bytes]:
    return open(path, "ab")  # the caller closes it
