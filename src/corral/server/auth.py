"""Who is calling: API keys (Authorization: Bearer) and worker tokens (X-Worker-Token).

Authentication is a dependency that yields an identity; handlers never parse credentials.
Secrets are random, shown once, stored as SHA-256 and compared in constant time.

Neither kind of secret costs a database round trip per request once seen (``Credentials``):
a worker's token is checked again inside the transaction of what it asked for, against the
row that transaction reads anyway, so a rotated or removed token stops working at once, on
every coordinator; an API key is looked up again after ``KEY_TTL_S``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

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
    """Who a token named when it was last looked up; ``Credentials.verify`` confirms it in
    the request's own transaction."""

    worker_id: str
    tenant_id: str
    token_hash: str


KEY_TTL_S = 2.0  # how long a looked-up API key is trusted before it is read again
MAX_CACHED = 100_000  # secrets remembered; past it the cache starts anew


@dataclass
class Credentials:
    """The secrets this coordinator has seen, by their SHA-256."""

    clock: Any = time.monotonic
    _workers: dict[str, WorkerIdentity] = field(default_factory=dict)
    _keys: dict[str, tuple[Identity, float]] = field(default_factory=dict)

    async def worker(self, conn_of: Any, digest: str) -> WorkerIdentity:
        found = self._workers.get(digest)
        if found is None:
            async with conn_of() as conn:
                row = await workers_q.by_token_hash(conn, digest)
            if row is None or not hmac.compare_digest(row["token_hash"], digest):
                raise Unauthenticated("invalid worker token")
            found = WorkerIdentity(row["id"], row["tenant_id"], digest)
            self._remember(self._workers, digest, found)
        return found

    async def verify(
        self, conn: AsyncConnection, w: WorkerIdentity, *, lock: bool = False, row: bool = True
    ) -> RowMapping:
        """The worker's row (``row=False``: only its token), read (``lock``: and locked) in
        this transaction, if its token is still the one that was presented; else the token
        is forgotten and refused."""
        if row:
            found = await workers_q.get(conn, w.tenant_id, w.worker_id, for_update=lock)
        else:
            found = await workers_q.token_of(conn, w.tenant_id, w.worker_id, for_update=lock)
        if found is None or not hmac.compare_digest(found["token_hash"], w.token_hash):
            self._workers.pop(w.token_hash, None)
            raise Unauthenticated("invalid worker token")
        return found

    def forget_worker(self, worker_id: str) -> None:
        """Its token was rotated or it was removed, here: refuse the old token before any
        transaction reads it again."""
        for digest in [d for d, w in self._workers.items() if w.worker_id == worker_id]:
            del self._workers[digest]

    async def key(self, conn_of: Any, digest: str) -> Identity:
        cached = self._keys.get(digest)
        if cached is not None and cached[1] > self.clock():
            return cached[0]
        async with conn_of() as conn:
            row = await keys_q.by_hash(conn, digest)
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            self._keys.pop(digest, None)
            raise Unauthenticated("invalid API key")
        who = Identity(tenant_id=row["tenant_id"], role=Role(row["role"]), key_id=row["id"])
        self._remember(self._keys, digest, (who, self.clock() + KEY_TTL_S))
        return who

    @staticmethod
    def _remember(cache: dict[str, Any], digest: str, value: Any) -> None:
        if len(cache) >= MAX_CACHED:
            cache.clear()
        cache[digest] = value


async def api_identity(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    if creds is None or not creds.credentials:
        raise Unauthenticated("an API key is required: Authorization: Bearer <key>")
    core = request.app.state.core
    who: Identity = await core.credentials.key(core.store.tx, hash_secret(creds.credentials))
    request.state.caller = who.key_id
    return who


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
    core = request.app.state.core
    who: WorkerIdentity = await core.credentials.worker(core.store.tx, hash_secret(token.strip()))
    request.state.caller = who.worker_id
    return who


Admin = Annotated[Identity, require(Role.ADMIN)]
Member = Annotated[Identity, require(Role.MEMBER)]
Viewer = Annotated[Identity, require(Role.VIEWER)]
Worker = Annotated[WorkerIdentity, Depends(worker_identity)]


BOOTSTRAP_KEY_NAME = "bootstrap admin"


async def ensure_admin_key(core: Any, bootstrap: str | None) -> str | None:
    """First start: create an admin key. Returns its plaintext if generated here.

    A bootstrap key (CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY) is made valid on every start instead,
    so automation can always reach a coordinator without scraping its output.
    """
    async with core.store.tx() as conn:
        if bootstrap:
            digest = hash_secret(bootstrap)
            # The key this replaces, if another was the bootstrap key before, stops working.
            await keys_q.delete_named_except(conn, BOOTSTRAP_KEY_NAME, digest)
            if await keys_q.by_hash(conn, digest) is None:
                await keys_q.insert(conn, id=new_id("key"), tenant_id=DEFAULT_TENANT,
                                    name=BOOTSTRAP_KEY_NAME, key_hash=digest,
                                    role=Role.ADMIN.value, now=core.clock.now())  # fmt: skip
            return None
        if await keys_q.count(conn):
            return None
        key = new_secret("ck")
        await keys_q.insert(conn, id=new_id("key"), tenant_id=DEFAULT_TENANT, name="admin",
                            key_hash=hash_secret(key), role=Role.ADMIN.value,
                            now=core.clock.now())  # fmt: skip
        return key
