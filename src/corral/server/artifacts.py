"""What travels with a job through the blob store: its packed working directory (uploaded by
its user, fetched by each worker that runs it), and what its attempts store (checkpoints,
which the next attempt resumes from, and declared outputs).

A worker reads or writes only for an attempt it holds (as its reports and logs are fenced),
and only its job's tenant's blobs; a user only its own tenant's. Bytes never pass through a
transaction: an upload is checked against the attempt, streamed to the store (hashed, capped),
and recorded by ``apply`` only if the attempt is still the worker's then.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from sqlalchemy.engine import RowMapping

from corral.model import InvalidInput, NotFound, StaleAttempt
from corral.model.changes import Record, StoreArtifact, Why
from corral.model.history import Kind
from corral.protocol import ArtifactList, ArtifactView, BlobStored
from corral.server.auth import Identity, WorkerIdentity
from corral.server.core import Core
from corral.server.jobs import _attempt_of
from corral.store import artifacts as artifacts_q
from corral.store import as_utc
from corral.store import jobs as jobs_q
from corral.store.blobs import BlobStore, valid_digest

__all__ = ["CHECKPOINT", "OUTPUT", "Download", "download", "job_artifacts", "latest_checkpoint",
           "put_artifact", "put_blob", "workdir"]  # fmt: skip

MAX_NAME = 300
CHECKPOINT, OUTPUT = "checkpoint", "output"


@dataclass(frozen=True)
class Download:
    digest: str
    size: int
    chunks: AsyncIterator[bytes]
    artifact: ArtifactView | None = None


def _blobs(core: Core) -> BlobStore:
    assert core.blobs is not None, "the blob store opens with the app"
    return core.blobs


def view(row: RowMapping) -> ArtifactView:
    return ArtifactView(id=row["id"], job_id=row["job_id"], attempt=row["attempt"],
                        kind=row["kind"], name=row["name"], step=row["step"],
                        digest=row["digest"], size=row["size"],
                        created_at=as_utc(row["created_at"]))  # fmt: skip


async def put_blob(
    core: Core, who: Identity, digest: str, body: AsyncIterable[bytes]
) -> BlobStored:
    """A user's upload (a packed working directory), named by the SHA-256 it must have."""
    valid_digest(digest)
    blobs = _blobs(core)
    if await blobs.exists(who.tenant_id, digest):
        return BlobStored(digest=digest, size=await blobs.size(who.tenant_id, digest),
                          created=False)  # fmt: skip
    stored = await blobs.write(who.tenant_id, body, expect=digest,
                               max_bytes=core.settings.blob_max_bytes)  # fmt: skip
    return BlobStored(digest=stored.digest, size=stored.size, created=True)


async def has_blob(core: Core, who: Identity, digest: str) -> int | None:
    """Its size, if the tenant has it."""
    valid_digest(digest)
    blobs = _blobs(core)
    if not await blobs.exists(who.tenant_id, digest):
        return None
    return await blobs.size(who.tenant_id, digest)


def _current(row: RowMapping | None, w: WorkerIdentity, job_id: str, attempt: int) -> None:
    """``attempt`` is the job's current one, this worker's, and has not ended: an attempt
    that failed or was lost must not leave a checkpoint its job's next attempt would take."""
    _attempt_of(row, w, job_id, attempt)
    assert row is not None
    if row["attempt"] != attempt or row["outcome"] is not None or row["att_finished_at"]:
        raise StaleAttempt(f"attempt {attempt} of {job_id} has ended or is not its current one")


async def _held(core: Core, w: WorkerIdentity, job_id: str, attempt: int) -> RowMapping:
    """The job, if ``attempt`` of it is this worker's and running; else StaleAttempt (409)."""
    async with core.tx() as t:
        await core.credentials.verify(t.conn, w, row=False)
        tenant = None if w.shared else w.tenant_id
        rows = await jobs_q.reported(t.conn, tenant, {job_id: attempt})
        _current(rows.get(job_id), w, job_id, attempt)
        return rows[job_id]


async def workdir(core: Core, w: WorkerIdentity, job_id: str, attempt: int) -> Download:
    row = await _held(core, w, job_id, attempt)
    async with core.tx() as t:
        job = await artifacts_q.workdir_of(t.conn, job_id)
    if job is None or not job["workdir"]:
        raise NotFound(f"job {job_id} has no packed working directory")
    blobs, digest = _blobs(core), job["workdir"]
    size = await blobs.size(row["tenant_id"], digest)
    return Download(digest, size, await blobs.read(row["tenant_id"], digest))


def _valid_name(name: str, kind: str) -> None:
    """A checkpoint's name is one path part; an output's, a relative path in its job's
    directory (``model/weights.safetensors``)."""
    parts = name.split("/")
    if kind == CHECKPOINT and len(parts) > 1:
        raise InvalidInput("a checkpoint's name is one path part: no '/'", field="name")
    if not 0 < len(name) <= MAX_NAME or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"a relative path of 1-{MAX_NAME} characters, without '.' or '..'"
                           " parts", field="name")  # fmt: skip


async def put_artifact(
    core: Core, w: WorkerIdentity, job_id: str, attempt: int, *, kind: str, name: str,
    step: int | None, digest: str, body: AsyncIterable[bytes],
) -> ArtifactView:  # fmt: skip
    """An attempt's checkpoint or declared output stored as an artifact of its job; refused
    (409) if the attempt is no longer the worker's."""
    valid_digest(digest)
    _valid_name(name, kind)
    row = await _held(core, w, job_id, attempt)
    stored = await _blobs(core).write(row["tenant_id"], body, expect=digest,
                                      max_bytes=core.settings.blob_max_bytes)  # fmt: skip
    async with core.tx(w.worker_id) as t:
        tenant = None if w.shared else w.tenant_id
        rows = await jobs_q.reported(t.conn, tenant, {job_id: attempt}, for_update=True)
        _current(rows.get(job_id), w, job_id, attempt)
        await t.apply([StoreArtifact(tenant_id=row["tenant_id"], job_id=job_id,
                                     attempt=attempt, kind=kind, name=name, step=step,
                                     digest=stored.digest, size=stored.size)])  # fmt: skip
        (made,) = await artifacts_q.of_job(t.conn, row["tenant_id"], job_id, limit=1)
    return view(made)


async def latest_checkpoint(
    core: Core, w: WorkerIdentity, job_id: str, attempt: int
) -> Download | None:
    """The newest checkpoint of the job, from any of its attempts, for ``attempt`` to
    resume from; None when it has none."""
    row = await _held(core, w, job_id, attempt)
    async with core.tx(w.worker_id) as t:
        found = await artifacts_q.latest_checkpoint(t.conn, job_id)
        if found is not None:  # the history says where the attempt went on from
            why = Why(message=f"from the checkpoint of step {found['step']}",
                      detail={"step": found["step"], "from_attempt": found["attempt"],
                              "artifact_id": found["id"]})  # fmt: skip
            await t.apply([Record(Kind.JOB_RESUMED, row["tenant_id"], job_id=job_id,
                                  worker_id=w.worker_id, attempt=attempt, why=why)])  # fmt: skip
    if found is None:
        return None
    chunks = await _blobs(core).read(row["tenant_id"], found["digest"])
    return Download(found["digest"], found["size"], chunks, view(found))


async def job_artifacts(core: Core, who: Identity, job_id: str) -> ArtifactList:
    async with core.tx() as t:
        if await jobs_q.get(t.conn, who.tenant_id, job_id) is None:
            raise NotFound(f"no job {job_id}")
        rows = await artifacts_q.of_job(t.conn, who.tenant_id, job_id)
    return ArtifactList(artifacts=[view(r) for r in rows])


async def download(core: Core, who: Identity, job_id: str, artifact_id: int) -> Download:
    async with core.tx() as t:
        row = await artifacts_q.one(t.conn, who.tenant_id, job_id, artifact_id)
    if row is None:
        raise NotFound(f"job {job_id} has no artifact {artifact_id}")
    chunks = await _blobs(core).read(who.tenant_id, row["digest"])
    return Download(row["digest"], row["size"], chunks, view(row))
