"""The blob store: content-addressed bytes of a tenant (a job's packed working directory, its
checkpoints and outputs), kept out of the database.

One interface, two kinds: a local directory (the default, ``<data_dir>/blobs``) and any fsspec
URL (``s3://bucket/corral``, ``gs://…``, ``memory://…``; fsspec and the filesystem's own
package are optional extras). A blob's name is the SHA-256 of its content under its tenant's
prefix, so identical content is stored once per tenant, a tenant never reads another's, and
nothing can be overwritten with different bytes.

Bytes stream both ways in ``CHUNK`` pieces, never whole in memory: a write goes to a temporary
name while it is hashed and counted, is refused past its cap or when its hash is not the one
claimed, and only then takes its name; a read yields chunks. The file calls block, so they run
in a thread, one chunk at a time, and the event loop goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from corral.model import InvalidInput, NotFound, TooLarge

__all__ = ["CHUNK", "BlobStore", "Stored", "open_blob_store", "valid_digest"]

CHUNK = 1024 * 1024
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Stored:
    digest: str
    size: int


def valid_digest(digest: str, *, field: str = "digest") -> str:
    if not _DIGEST.match(digest):
        raise InvalidInput("a blob is named by its SHA-256: 64 lower-case hex digits", field=field)
    return digest


class _Files(Protocol):
    """The few file operations a store needs, on a local directory or an fsspec filesystem."""

    def open(self, path: str, mode: str) -> IO[bytes]: ...
    def exists(self, path: str) -> bool: ...
    def size(self, path: str) -> int: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...


class _Local:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, path: str) -> Path:
        return self.root / path

    def open(self, path: str, mode: str) -> IO[bytes]:
        full = self._path(path)
        if "w" in mode:
            full.parent.mkdir(parents=True, exist_ok=True)
        return full.open(mode)

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def size(self, path: str) -> int:
        return self._path(path).stat().st_size

    def rename(self, src: str, dst: str) -> None:
        target = self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(self._path(src), "rb") as fh:
            os.fsync(fh.fileno())  # the name is taken only by bytes that are on the disk
        os.replace(self._path(src), target)

    def remove(self, path: str) -> None:
        self._path(path).unlink(missing_ok=True)


class _Fsspec:
    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
            raise RuntimeError(
                f"a blob store at {url!r} needs fsspec: pip install 'corral[fsspec]'"
            ) from exc
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")

    def _path(self, path: str) -> str:
        return f"{self.root}/{path}"

    def open(self, path: str, mode: str) -> IO[bytes]:
        return self.fs.open(self._path(path), mode)  # type: ignore[no-any-return]

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._path(path)))

    def size(self, path: str) -> int:
        return int(self.fs.size(self._path(path)))

    def rename(self, src: str, dst: str) -> None:
        self.fs.mv(self._path(src), self._path(dst))

    def remove(self, path: str) -> None:
        if self.fs.exists(self._path(path)):
            self.fs.rm(self._path(path))


class BlobStore:
    def __init__(self, files: _Files, where: str) -> None:
        self._files = files
        self.where = where  # for a log line: the directory or URL

    @staticmethod
    def _name(tenant_id: str, digest: str) -> str:
        return f"{tenant_id}/{digest[:2]}/{digest}"

    async def exists(self, tenant_id: str, digest: str) -> bool:
        return await asyncio.to_thread(self._files.exists, self._name(tenant_id, digest))

    async def size(self, tenant_id: str, digest: str) -> int:
        try:
            return await asyncio.to_thread(self._files.size, self._name(tenant_id, digest))
        except FileNotFoundError:
            raise NotFound(f"no blob {digest}") from None

    async def write(
        self,
        tenant_id: str,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int,
        expect: str | None = None,
        field: str = "body",
    ) -> Stored:
        """Store what ``chunks`` yield; refused (and nothing kept) past ``max_bytes`` or when
        its SHA-256 is not ``expect``."""
        tmp = f"{tenant_id}/.incoming/{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        size = 0
        fh = await asyncio.to_thread(self._files.open, tmp, "wb")
        try:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"larger than the limit of {max_bytes} bytes", field=field)
                    digest.update(chunk)
                    await asyncio.to_thread(fh.write, chunk)
            finally:
                await asyncio.to_thread(fh.close)
            got = digest.hexdigest()
            if expect is not None and got != expect:
                raise InvalidInput(
                    f"the content's SHA-256 is {got}, not {expect}: it was changed or cut on"
                    " the way",
                    field=field,
                )
            name = self._name(tenant_id, got)
            if not await asyncio.to_thread(self._files.exists, name):
                await asyncio.to_thread(self._files.rename, tmp, name)
            return Stored(got, size)
        finally:
            await asyncio.to_thread(self._files.remove, tmp)

    async def read(self, tenant_id: str, digest: str) -> AsyncIterator[bytes]:
        """The blob's bytes, a chunk at a time; NotFound before the first when it is absent."""
        name = self._name(tenant_id, digest)
        try:
            fh = await asyncio.to_thread(self._files.open, name, "rb")
        except FileNotFoundError:
            raise NotFound(f"no blob {digest}") from None
        return _chunks(fh)

    async def remove(self, tenant_id: str, digest: str) -> None:
        await asyncio.to_thread(self._files.remove, self._name(tenant_id, digest))


async def _chunks(fh: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(fh.close)


def open_blob_store(where: str | Path) -> BlobStore:
    """A directory (a path, or ``file://``) or an fsspec URL."""
    text = str(where)
    if "://" in text and not text.startswith("file://"):
        return BlobStore(_Fsspec(text), text)
    root = Path(text.removeprefix("file://")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return BlobStore(_Local(root), str(root))
