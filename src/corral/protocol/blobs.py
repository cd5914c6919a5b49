"""Blob bodies on the wire, both ways: a file sent as an upload that a retry can send again,
and a download streamed to a file whose SHA-256 is checked before it takes its name. The
client (a user's working directory, an artifact) and the worker (a job's directory, its
checkpoints) move blobs only through these."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from corral.model.errors import CorralError
from corral.protocol.transport import Transport

__all__ = ["CHUNK", "DIGEST_HEADER", "FileBody", "Mismatch", "download", "sha256_of", "upload"]

CHUNK = 1024 * 1024
DIGEST_HEADER = "X-Content-SHA256"


class Mismatch(CorralError):
    """What arrived does not hash to what was promised: cut or changed on the way."""

    code = "digest_mismatch"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class FileBody:
    """A file's bytes as a request body; each iteration reads it from its start, so a retry
    sends it whole again (httpx refuses to send a generator twice)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def __aiter__(self) -> AsyncIterator[bytes]:
        fh = await asyncio.to_thread(self.path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(fh.read, CHUNK):
                yield chunk
        finally:
            fh.close()


async def upload(t: Transport, method: str, path: str, file: Path, **kw: Any) -> Any:
    """Send ``file`` as the body (its length declared); the answer's JSON."""
    size = await asyncio.to_thread(os.path.getsize, file)
    headers = {"Content-Length": str(size),
               "Content-Type": "application/octet-stream", **kw.pop("headers", {})}  # fmt: skip
    return await t.json(method, path, content=FileBody(file), headers=headers, **kw)


async def download(
    t: Transport, path: str, dest: Path, *, expect: str | None = None, **kw: Any
) -> httpx.Headers | None:
    """GET ``path`` into ``dest``: the answer's headers, or None (and no file) for 204. The
    bytes must hash to ``expect``, else to what the answer's ``X-Content-SHA256`` says."""
    fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=dest.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as fh:
            async with t.stream("GET", path, **kw) as resp:
                if resp.status_code == 204:
                    return None
                headers = resp.headers
                async for chunk in resp.aiter_bytes(CHUNK):
                    digest.update(chunk)
                    await asyncio.to_thread(fh.write, chunk)
        want = expect or headers.get(DIGEST_HEADER)
        if want is not None and digest.hexdigest() != want:
            raise Mismatch(f"{path} arrived with SHA-256 {digest.hexdigest()}, not {want}")
        os.replace(tmp, dest)
        return headers
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
