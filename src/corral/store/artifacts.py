"""What a job's attempts stored in the blob store (checkpoints, declared outputs): the rows
that name the blobs, and a job's packed working directory."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.store.tables import artifacts, jobs

MAX_LISTED = 1000  # a job's artifacts listed at once, newest first


async def add(
    conn: AsyncConnection, *, tenant_id: str, job_id: str, attempt: int, kind: str, name: str,
    step: int | None, digest: str, size: int, now: datetime,
) -> int:  # fmt: skip
    q = artifacts.insert().values(
        tenant_id=tenant_id, job_id=job_id, attempt=attempt, kind=kind, name=name, step=step,
        digest=digest, size=size, created_at=now,
    )  # fmt: skip
    result = await conn.execute(q)
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def of_job(
    conn: AsyncConnection, tenant_id: str, job_id: str, *, limit: int = MAX_LISTED
) -> Sequence[RowMapping]:
    """Newest first."""
    q = (
        select(artifacts)
        .where(artifacts.c.tenant_id == tenant_id, artifacts.c.job_id == job_id)
        .order_by(artifacts.c.id.desc())
        .limit(limit)
    )
    return (await conn.execute(q)).mappings().all()


async def one(
    conn: AsyncConnection, tenant_id: str, job_id: str, artifact_id: int
) -> RowMapping | None:
    q = select(artifacts).where(
        artifacts.c.tenant_id == tenant_id, artifacts.c.job_id == job_id,
        artifacts.c.id == artifact_id,
    )  # fmt: skip
    return (await conn.execute(q)).mappings().first()


async def latest_checkpoint(conn: AsyncConnection, job_id: str) -> RowMapping | None:
    """The checkpoint of the highest step, the newest of that step."""
    q = (
        select(artifacts)
        .where(artifacts.c.job_id == job_id, artifacts.c.kind == "checkpoint")
        .order_by(artifacts.c.step.desc(), artifacts.c.id.desc())
        .limit(1)
    )
    return (await conn.execute(q)).mappings().first()


async def workdir_of(conn: AsyncConnection, job_id: str) -> RowMapping | None:
    q = select(jobs.c.tenant_id, jobs.c.workdir).where(jobs.c.id == job_id)
    return (await conn.execute(q)).mappings().first()
