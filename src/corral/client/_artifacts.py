"""The client's calls for what travels through the blob store: a job's working directory
(packed and uploaded) and what its attempts stored (checkpoints and outputs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral.client._pack import DEFAULT_MAX_BYTES, pack
from corral.model import NotFound
from corral.protocol import ArtifactList, ArtifactView, BlobStored
from corral.protocol.blobs import download, sha256_of, upload
from corral.protocol.transport import Transport


class ArtifactCalls:
    """Mixed into ``AsyncClient``."""

    _t: Transport

    async def upload_blob(self, path: str | Path, *, digest: str | None = None) -> BlobStored:
        """Upload a file to the tenant's blob store, named by its SHA-256; a blob the tenant
        has already is not sent again (``created=False``)."""
        path = Path(path)
        if digest is None:
            digest = await asyncio.to_thread(sha256_of, path)
        try:
            head = await self._t.request("HEAD", f"/api/blobs/{digest}")
            return BlobStored(digest=digest, size=int(head.headers.get("content-length", 0)),
                              created=False)  # fmt: skip
        except NotFound:
            pass
        return BlobStored.model_validate(await upload(self._t, "PUT", f"/api/blobs/{digest}", path))

    async def upload_workdir(
        self, directory: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> str:
        """Pack ``directory`` (honouring ``.gitignore`` and ``.corralignore``) and upload it;
        returns its SHA-256, the ``workdir`` of a job that should run in it."""
        packed = await asyncio.to_thread(pack, directory, max_bytes=max_bytes)
        try:
            await self.upload_blob(packed.path, digest=packed.digest)
        finally:
            packed.path.unlink(missing_ok=True)
        return packed.digest

    async def artifacts(self, job_id: str) -> list[ArtifactView]:
        """What the job's attempts stored (checkpoints, outputs), newest first."""
        body = await self._t.json("GET", f"/api/jobs/{job_id}/artifacts")
        return ArtifactList.model_validate(body).artifacts

    async def download_artifact(self, job_id: str, artifact_id: int, dest: str | Path) -> Path:
        """Stream one artifact to ``dest`` (a file; in a directory, under the artifact's
        name, a checkpoint as ``NAME-step-N.tar``: the tar of what was checkpointed and its
        ``meta.json``), checking its SHA-256 before it takes the name."""
        dest = Path(dest)
        found = [a for a in await self.artifacts(job_id) if a.id == artifact_id]
        if not found:
            raise NotFound(f"job {job_id} has no artifact {artifact_id}")
        art = found[0]
        if dest.is_dir():  # a checkpoint comes as the tar of what was checkpointed
            kept = art.name if art.kind == "output" else f"{art.name}-step-{art.step}.tar"
            dest = dest / kept  # an output's name is a relative path without ".." parts
            await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        await download(self._t, f"/api/jobs/{job_id}/artifacts/{artifact_id}", dest,
                       expect=art.digest)  # fmt: skip
        return dest
