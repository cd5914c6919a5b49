"""The public Python client of the coordinator's API.

    from corral.client import Client
    with Client() as corral:                      # CORRAL_URL, CORRAL_API_KEY
        job = corral.submit(["python", "train.py", "--lr", "0.01"])
        print(corral.wait(job.id).result)

``AsyncClient`` is the same API for asyncio code. Results are the protocol's typed models
(``JobView``, ``WorkerView``, ``EventView``…); failures are the typed errors below, all
``CorralError``. See docs/client.md.
"""

from corral.client._async import AsyncClient
from corral.client._calls import CallFailed, call_job
from corral.client._config import DEFAULT_URL
from corral.client._sync import Client
from corral.model.errors import (
    Conflict,
    CorralError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ServerError,
    Unauthenticated,
    Unreachable,
)
from corral.protocol import EventView, JobView, WorkerCreated, WorkerView

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "CallFailed",
    "Client",
    "Conflict",
    "CorralError",
    "EventView",
    "InvalidInput",
    "JobView",
    "NotFound",
    "PermissionDenied",
    "ServerError",
    "Unauthenticated",
    "Unreachable",
    "WorkerCreated",
    "WorkerView",
    "call_job",
]
