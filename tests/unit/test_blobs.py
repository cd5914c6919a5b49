"""The blob store, on a local directory and on an fsspec filesystem (fsspec's own in-memory
one: a real implementation of the interface S3 and GCS stores share)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.model import InvalidInput, NotFound, TooLarge
from corral.store.blobs import CHUNK, BlobStore, open_blob_store


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return open_blob_store(tmp_path / "blobs")
    pytest.importorskip("fsspec")
    return open_blob_store(f"memory://corral-test-{secrets.token_hex(4)}")


async def _chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _read(store: BlobStore, tenant: str, digest: str) -> bytes:
    return b"".join([c async for c in await store.read(tenant, digest)])


async def test_a_blob_is_named_by_its_hash_and_read_back_in_chunks(store: BlobStore) -> None:
    data = secrets.token_bytes(CHUNK * 2 + 123)
    digest = hashlib.sha256(data).hexdigest()
    stored = await store.write("t_a", _chunks(data), max_bytes=10 * CHUNK, expect=digest)
    assert (stored.digest, stored.size) == (digest, len(data))
    assert await store.exists("t_a", digest) and await store.size("t_a", digest) == len(data)
    chunks = [c async for c in await store.read("t_a", digest)]
    assert b"".join(chunks) == data and max(map(len, chunks)) <= CHUNK
    # The same bytes again: stored once, nothing changes.
    assert (await store.write("t_a", _chunks(data), max_bytes=10 * CHUNK)).digest == digest


async def test_a_tenant_reads_only_its_own(store: BlobStore) -> None:
    stored = await store.write("t_a", _chunks(b"secret"), max_bytes=CHUNK)
    assert not await store.exists("t_b", stored.digest)
    with pytest.raises(NotFound):
        await store.read("t_b", stored.digest)


async def test_bytes_that_hash_otherwise_or_pass_the_cap_are_not_kept(store: BlobStore) -> None:
    with pytest.raises(InvalidInput, match="SHA-256"):
        await store.write("t_a", _chunks(b"abc"), max_bytes=CHUNK, expect="0" * 64)
    assert not await store.exists("t_a", hashlib.sha256(b"abc").hexdigest())
    with pytest.raises(TooLarge):
        await store.write("t_a", _chunks(b"x" * 5000, 1000), max_bytes=4096)
    assert not await store.exists("t_a", hashlib.sha256(b"x" * 5000).hexdigest())


def test_nothing_half_written_is_left_on_disk(tmp_path: Path) -> None:
    import asyncio

    store = open_blob_store(tmp_path / "blobs")
    with pytest.raises(TooLarge):
        asyncio.run(store.write("t_a", _chunks(b"x" * 5000, 1000), max_bytes=4096))
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []
