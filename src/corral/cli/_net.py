"""Ports: say "port in use" in one line before uvicorn would say it with a traceback."""

from __future__ import annotations

import socket

from corral.cli._exit import ExitCode, Failure


def _bind(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As asyncio's server does, so a port in TIME_WAIT counts as free here too.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def ensure_free(host: str, port: int, *, hint: str = "--port") -> None:
    if port == 0:
        return
    try:
        _bind(host, port).close()
    except OSError as exc:
        raise Failure(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            f"(another coordinator? pick another with {hint})",
            ExitCode.JOB_FAILED,
        ) from None


def free_port(host: str) -> int:
    with _bind(host, 0) as sock:
        return int(sock.getsockname()[1])
