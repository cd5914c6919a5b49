"""Who is calling: API keys (Authorization: Bearer) and worker tokens (X-Worker-Token).

Authentication is a dependency that yields an identity; handlers never parse credentials.
Secrets are random, shown once, stored as SHA-256 and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from corral.model import DEFAULT_TENANT, ROLE_RANK, PermissionDenied, Role, Unauthenticated
from corral.protocol import WORKER_TOKEN_HEADER
from corral.store import keys as keys_q
from corral.store import workers as workers_q

_bearer = HTTPBearer(auto_error=False, description="API key")
_worker_token = APIKeyHeader(name=WORKER_TOKEN_HEADER, auto_error=False, description="worker token")


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class Identity:
    tenant_id: str
    role: Role
    key_id: str


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    worker_id: str
    tenant_id: str
    row: Any


async def api_identity(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    if creds is None or not creds.credentials:
        raise Unauthenticated("an API key is required: Authorization: Bearer <key>")
    digest = hash_secret(creds.credentials)
    async with request.app.state.core.store.tx() as conn:
        row = await keys_q.by_hash(conn, digest)
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        raise Unauthenticated("invalid API key")
    request.state.caller = row["id"]
    return Identity(tenant_id=row["tenant_id"], role=Role(row["role"]), key_id=row["id"])


def require(role: Role) -> Any:
    async def check(identity: Annotated[Identity, Depends(api_identity)]) -> Identity:
        if ROLE_RANK[identity.role] < ROLE_RANK[role]:
            raise PermissionDenied(f"this needs the {role} role")
        return identity

    return Depends(check)


async def worker_identity(
    request: Request, token: Annotated[str | None, Depends(_worker_token)]
) -> WorkerIdentity:
    if not token:
        raise Unauthenticated(f"a worker token is required: {WORKER_TOKEN_HEADER}")
    digest = hash_secret(token.strip())
    async with request.app.state.core.store.tx() as conn:
        row = await workers_q.by_token_hash(conn, digest)
    if row is None or not hmac.compare_digest(row["token_hash"], digest):
        raise Unauthenticated("invalid worker token")
    request.state.caller = row["id"]
    return WorkerIdentity(worker_id=row["id"], tenant_id=row["tenant_id"], row=row)


Admin = Annotated[Identity, require(Role.ADMIN)]
Member = Annotated[Identity, require(Role.MEMBER)]
Viewer = Annotated[Identity, require(Role.VIEWER)]
Worker = Annotated[WorkerIdentity, Depends(worker_identity)]


async def ensure_admin_key(core: Any, bootstrap: str | None) -> str | None:
    """First start: create an admin key. Returns its plaintext if generated here.

    A bootstrap key (CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY) is made valid on every start instead,
    so automation can always reach a coordinator without scraping its output.
    """
    async with core.store.tx() as conn:
        if bootstrap:
            digest = hash_secret(bootstrap)
            if await keys_q.by_hash(conn, digest) is None:
                await keys_q.insert(conn, id=new_id("key"), tenant_id=DEFAULT_TENANT,
                                    name="bootstrap admin", key_hash=digest,
                                    role=Role.ADMIN.value, now=core.clock.now())  # fmt: skip
            return None
        if await keys_q.count(conn):
            return None
        key = new_secret("ck")
        await keys_q.insert(conn, id=new_id("key"), tenant_id=DEFAULT_TENANT, name="admin",
                            key_hash=hash_secret(key), role=Role.ADMIN.value,
                            now=core.clock.now())  # fmt: skip
        return key
