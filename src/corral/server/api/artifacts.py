"""Blobs and artifacts: a user uploads a packed working directory and reads what a job
stored; a worker fetches its job's directory and checkpoint, and stores checkpoints."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from corral.protocol import ArtifactList, ArtifactView, BlobStored
from corral.server import artifacts
from corral.server.artifacts import Download
from corral.server.auth import JobsRead, JobsSubmit, Worker

blobs = APIRouter(prefix="/api/blobs", tags=["artifacts"])
jobs = APIRouter(prefix="/api/jobs", tags=["artifacts"])
workers = APIRouter(prefix="/api/workers/job", tags=["workers"])

# Routes whose request body is a blob: BodyLimit gives them the blob store's cap.
UPLOADS = r"^/api/(blobs/[^/]+|workers/job/[^/]+/(checkpoints|outputs)/[^/]+)$"

Digest = Annotated[str, Path(description="SHA-256 of the content, 64 lower-case hex digits")]
Attempt = Annotated[int, Query(ge=1, le=2**31 - 1, description="the attempt this worker holds")]
_OCTETS: dict[str, Any] = {"content": {"application/octet-stream": {}}}


def download_response(d: Download, filename: str | None = None) -> StreamingResponse:
    headers = {"Content-Length": str(d.size), "X-Content-SHA256": d.digest}
    if d.artifact is not None:
        # ASCII (a header is Latin-1): a name of any script survives as \u escapes.
        headers["X-Corral-Artifact"] = json.dumps(d.artifact.model_dump(mode="json"))
    if filename is not None:  # RFC 6266: any name, quoted; a plain ASCII one beside it
        plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                        for c in filename.rsplit("/", 1)[-1])  # fmt: skip
        utf8 = quote(filename, safe="")
        headers["Content-Disposition"] = (
            f"attachment; filename=\"{plain}\"; filename*=UTF-8''{utf8}"
        )
    return StreamingResponse(d.chunks, media_type="application/octet-stream", headers=headers)


@blobs.put(
    "/{digest}",
    response_model=BlobStored,
    status_code=201,
    responses={200: {"description": "the tenant had it already", "model": BlobStored}},
    description="Upload a blob (a packed working directory, a .tar.gz) named by its SHA-256;"
    " refused (422) if the bytes hash otherwise, 413 past the coordinator's blob_max_bytes.",
)
async def put_blob(
    request: Request, response: Response, who: JobsSubmit, digest: Digest
) -> BlobStored:
    stored = await artifacts.put_blob(request.app.state.core, who, digest, request.stream())
    if not stored.created:
        response.status_code = 200
    return stored


@blobs.head("/{digest}", responses={404: {"description": "the tenant has no such blob"}})
async def has_blob(request: Request, who: JobsSubmit, digest: Digest) -> Response:
    size = await artifacts.has_blob(request.app.state.core, who, digest)
    if size is None:
        return Response(status_code=404)
    return Response(status_code=200, headers={"Content-Length": str(size)})


@jobs.get("/{job_id}/artifacts", response_model=ArtifactList)
async def job_artifacts(request: Request, who: JobsRead, job_id: str) -> ArtifactList:
    """What the job's attempts stored: checkpoints and declared outputs, newest first."""
    return await artifacts.job_artifacts(request.app.state.core, who, job_id)


@jobs.get("/{job_id}/artifacts/{artifact_id}", response_class=StreamingResponse,
          responses={200: _OCTETS})  # fmt: skip
async def download(
    request: Request,
    who: JobsRead,
    job_id: str,
    artifact_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
) -> Response:
    d = await artifacts.download(request.app.state.core, who, job_id, artifact_id)
    assert d.artifact is not None
    return download_response(d, d.artifact.name)


@workers.get("/{job_id}/workdir", response_class=StreamingResponse,
             responses={200: _OCTETS, 409: {"description": "stale attempt"}})  # fmt: skip
async def workdir(request: Request, worker: Worker, job_id: str, attempt: Attempt) -> Response:
    """The job's packed working directory, for an attempt this worker holds."""
    found = await artifacts.workdir(request.app.state.core, worker, job_id, attempt)
    return download_response(found)


@workers.get(
    "/{job_id}/checkpoint",
    response_class=StreamingResponse,
    responses={200: _OCTETS, 204: {"description": "no checkpoint yet"}, 409: {}},
)
async def checkpoint(request: Request, worker: Worker, job_id: str, attempt: Attempt) -> Response:
    """The job's newest checkpoint (of any attempt) for this attempt to resume from; its
    record in ``X-Corral-Artifact``."""
    found = await artifacts.latest_checkpoint(request.app.state.core, worker, job_id, attempt)
    return Response(status_code=204) if found is None else download_response(found)


@workers.put("/{job_id}/checkpoints/{digest}", response_model=ArtifactView, status_code=201,
             responses={409: {"description": "stale attempt"}})  # fmt: skip
async def put_checkpoint(
    request: Request,
    worker: Worker,
    job_id: str,
    digest: Digest,
    attempt: Attempt,
    step: Annotated[int, Query(ge=0, le=2**62)],
    name: Annotated[str, Query(min_length=1, max_length=artifacts.MAX_NAME)] = "checkpoint",
) -> ArtifactView:
    return await artifacts.put_artifact(
        request.app.state.core, worker, job_id, attempt, kind=artifacts.CHECKPOINT, name=name,
        step=step, digest=digest, body=request.stream(),
    )  # fmt: skip


@workers.put("/{job_id}/outputs/{digest}", response_model=ArtifactView, status_code=201,
             responses={409: {"description": "stale attempt"}})  # fmt: skip
async def put_output(
    request: Request,
    worker: Worker,
    job_id: str,
    digest: Digest,
    attempt: Attempt,
    name: Annotated[
        str,
        Query(
            min_length=1,
            max_length=artifacts.MAX_NAME,
            description="its path in the job's directory",
        ),
    ],
) -> ArtifactView:
    """A file the job declared as an output (``--output``), once it has succeeded."""
    return await artifacts.put_artifact(
        request.app.state.core, worker, job_id, attempt, kind=artifacts.OUTPUT, name=name,
        step=None, digest=digest, body=request.stream(),
    )  # fmt: skip
