"""Who is calling: API keys (Authorization: Bearer), worker tokens (X-Worker-Token) and
workers' signed requests (X-Corral-Signature, ``corral.protocol.signing``).

Authentication is a dependency that yields an identity; handlers never parse credentials.
Secrets are random, shown once, stored as SHA-256 and compared in constant time.

A signed request is checked against the public key of the certificate stored at enrolment
(cached, as a token is, and confirmed in the request's transaction), within
``signing.WINDOW_S`` of this clock, and its nonce is written in that transaction: one seen
before, on any coordinator of the store, is a replay and refused.

Neither kind of secret costs a database round trip per request once seen (``Credentials``):
a worker's token is checked again inside the transaction of what it asked for, against the
row that transaction reads anyway, so a rotated or removed token stops working at once, on
every coordinator; an API key is looked up again after ``KEY_TTL_S`` (at once on the
coordinator that revoked or rotated it, or suspended its tenant).

What a key may do is its role's permissions (``corral.model.access``), asked in one place:
``require(permission)``, the dependency every route names.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from limits import RateLimitItemPerHour, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.model import (
    DEFAULT_TENANT,
    Permission,
    PermissionDenied,
    Role,
    TenantStatus,
    TooManyRequests,
    Unauthenticated,
    allows,
)
from corral.model.changes import DeleteKey, InsertKey, Why
from corral.protocol import WORKER_TOKEN_HEADER, signing
from corral.server.tokens import looks_like_token
from corral.store import as_utc
from corral.store import keys as keys_q
from corral.store import workers as workers_q

log = structlog.get_logger("corral.auth")
_bearer = HTTPBearer(auto_error=False, description="API key")
_worker_token = APIKeyHeader(
    name=WORKER_TOKEN_HEADER, auto_error=False,
    description="worker token; or, for a worker enrolled with a certificate, a signed request"
    f" ({signing.SIGNATURE_HEADER}, docs/SECURITY.md)",
)  # fmt: skip


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
    token: bool = False  # it came as an API token issued for the key, not the key itself
    key_hash: str = field(default="", repr=False)  # the key's current secret, as stored


KEY_TAG_CHARS = 16  # of a key's stored hash, in each token issued for it (its "kh" claim)


def key_tag(key_hash: str) -> str:
    """What binds a token to its key's current secret: rotating the key changes it, so a
    token issued before the rotation no longer matches its key."""
    return key_hash[:KEY_TAG_CHARS]


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """Who a token named when it was last looked up; ``Credentials.verify`` confirms it in
    the request's own transaction."""

    worker_id: str
    tenant_id: str
    token_hash: str  # the token's hash, or the certificate key's fingerprint
    shared: bool = False  # an operator's worker that runs every tenant's jobs
    nonce: str | None = None  # a signed request's, written when it is verified
    nonce_until: datetime | None = None  # how long it must be remembered


@dataclass(frozen=True, slots=True)
class _Enrolled:
    """A worker's certificate key, as last looked up."""

    who: WorkerIdentity
    key: Ed25519PublicKey
    expires_at: datetime
    trust_until: float


class Refusals:
    """What each address has been refused lately, and what it may still do without a key
    (self-service onboarding)."""

    def __init__(self, per_minute: int, onboard_per_hour: int = 5) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._failures = RateLimitItemPerMinute(per_minute)
        self._recorded = RateLimitItemPerMinute(per_minute)
        self._onboards = RateLimitItemPerHour(onboard_per_hour)

    def onboard(self, source: str | None) -> None:
        """A self-service onboarding from ``source``, within its budget an hour, or 429."""
        if not self._limiter.hit(self._onboards, "onboard", source or "-"):
            raise TooManyRequests(
                "too many tenants onboarded from this address: try again in an hour, or ask"
                " an operator", retry_after_s=3600,
            )  # fmt: skip

    def check(self, source: str | None) -> None:
        """Before credentials are looked at: an address past its budget is refused."""
        if source is not None and not self._limiter.test(self._failures, "auth", source):
            reset, _ = self._limiter.get_window_stats(self._failures, "auth", source)
            raise TooManyRequests(
                "too many refused authentications from this address: try again in a minute",
                retry_after_s=max(1, int(reset - datetime.now().timestamp()) + 1),
            )

    def refused(self, source: str | None, status: int) -> bool:
        """Count a refusal; whether it is still worth a record in the audit log."""
        key = source or "-"
        if status == Unauthenticated.status:
            return self._limiter.hit(self._failures, "auth", key)
        return self._limiter.hit(self._recorded, "denied", key)


KEY_TTL_S = 2.0  # how long a looked-up API key is trusted before it is read again
LAST_USED_EVERY_S = 60.0  # a key's last use is written at most this often
KEY_PREFIX_CHARS = 11  # "ck_" and 8 characters of the secret: shown, to tell keys apart
MAX_CACHED = 100_000  # secrets remembered; past it the cache starts anew
NONCE_SLACK_S = 5  # a nonce is remembered this much past its window: coordinators' clocks differ


@dataclass
class Credentials:
    """The secrets this coordinator has seen, by their SHA-256."""

    clock: Any = time.monotonic
    _workers: dict[str, WorkerIdentity] = field(default_factory=dict)
    _keys: dict[str, tuple[Identity, float]] = field(default_factory=dict)
    _enrolled: dict[str, _Enrolled] = field(default_factory=dict)

    async def signed(
        self, conn_of: Any, s: signing.Signed, now: datetime, method: str, target: str,
        body: bytes,
    ) -> WorkerIdentity:  # fmt: skip
        """The worker whose certificate key signed this request, if it is still its key and
        the request is inside the window; its nonce is checked in the request's transaction
        (``verify``)."""
        skew = s.ts - now.timestamp()
        if abs(skew) > signing.WINDOW_S:
            raise Unauthenticated(
                f"this signed request's time is {skew:+.0f} s from the coordinator's (at most"
                f" {signing.WINDOW_S} s): a replay, or the worker's clock is wrong"
            )
        held = self._enrolled.get(s.worker_id)
        if held is None or held.trust_until <= self.clock() or held.expires_at <= now:
            held = await self._enrolment(conn_of, s.worker_id, now)
        try:
            signing.verify(held.key, s, method, target, body)
        except signing.BadSignature as exc:
            raise Unauthenticated(str(exc)) from None
        until = datetime.fromtimestamp(s.ts + signing.WINDOW_S + NONCE_SLACK_S, UTC)
        return replace(held.who, nonce=s.nonce, nonce_until=until)

    async def _enrolment(self, conn_of: Any, worker_id: str, now: datetime) -> _Enrolled:
        self._enrolled.pop(worker_id, None)
        async with conn_of() as conn:
            row = await workers_q.key_of(conn, worker_id)
        if row is None or row["cert_pem"] is None:
            raise Unauthenticated("invalid worker signature: no such enrolled worker")
        cert = x509.load_pem_x509_certificate(row["cert_pem"].encode())
        key = cert.public_key()
        if not isinstance(key, Ed25519PublicKey) or not hmac.compare_digest(
            row["token_hash"], signing.key_fingerprint(key)
        ):
            raise Unauthenticated("invalid worker signature: its credentials were rotated")
        expires = as_utc(row["cert_expires_at"]) or now
        if expires <= now:
            raise Unauthenticated(
                f"this worker's certificate expired at {expires:%Y-%m-%d %H:%M:%S} UTC:"
                " enrol it again"
            )
        who = WorkerIdentity(row["id"], row["tenant_id"], row["token_hash"], shared=row["shared"])
        held = _Enrolled(who, key, expires, self.clock() + KEY_TTL_S)
        self._remember(self._enrolled, worker_id, held)
        return held

    async def worker(self, conn_of: Any, digest: str) -> WorkerIdentity:
        found = self._workers.get(digest)
        if found is None:
            async with conn_of() as conn:
                row = await workers_q.by_token_hash(conn, digest)
            if row is None or not hmac.compare_digest(row["token_hash"], digest):
                raise Unauthenticated("invalid worker token")
            found = WorkerIdentity(row["id"], row["tenant_id"], digest, shared=row["shared"])
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
            self._enrolled.pop(w.worker_id, None)
            raise Unauthenticated("invalid worker token")
        if w.nonce is not None:
            assert w.nonce_until is not None
            if not await workers_q.use_nonce(conn, w.worker_id, w.nonce, w.nonce_until):
                raise Unauthenticated("this signed request was taken before: a replay")
        return found

    def forget_worker(self, worker_id: str) -> None:
        """Its token was rotated or it was removed, here: refuse the old token before any
        transaction reads it again."""
        for digest in [d for d, w in self._workers.items() if w.worker_id == worker_id]:
            del self._workers[digest]
        self._enrolled.pop(worker_id, None)

    async def key(self, conn_of: Any, digest: str, now: datetime) -> Identity:
        """The key's identity, if it exists, has not expired and its tenant is active; its
        last use is written at most every ``LAST_USED_EVERY_S``."""
        return await self._lookup(conn_of, digest, now, lambda c: keys_q.by_hash(c, digest))

    async def key_by_id(self, conn_of: Any, key_id: str, now: datetime, tag: str) -> Identity:
        """As ``key``, for the key an API token was issued for, while its secret is still
        the one the token was issued under (``tag``, its ``kh`` claim): revoking or
        rotating the key, or suspending its tenant, ends its tokens too."""
        who = await self._lookup(conn_of, f"id:{key_id}", now, lambda c: keys_q.by_id(c, key_id))
        if not hmac.compare_digest(key_tag(who.key_hash), tag):
            raise Unauthenticated("this API token was issued before its key was rotated:"
                                  " ask for a new one")  # fmt: skip
        return who

    async def _lookup(self, conn_of: Any, ref: str, now: datetime, read: Any) -> Identity:
        cached = self._keys.get(ref)
        if cached is not None and cached[1] > self.clock():
            return cached[0]
        self._keys.pop(ref, None)
        async with conn_of() as conn:
            row = await read(conn)
        if row is None or (not ref.startswith("id:")
                           and not hmac.compare_digest(row["key_hash"], ref)):  # fmt: skip
            raise Unauthenticated("invalid API key")
        expires = as_utc(row["expires_at"])
        if expires is not None and expires <= now:
            raise Unauthenticated(f"this API key expired at {expires:%Y-%m-%d %H:%M:%S} UTC")
        if row["tenant_status"] != TenantStatus.ACTIVE:
            raise PermissionDenied(f"tenant {row['tenant_id']} is suspended")
        last = as_utc(row["last_used_at"])
        if last is None or (now - last).total_seconds() >= LAST_USED_EVERY_S:
            await self._used(conn_of, row["id"], now)
        who = Identity(tenant_id=row["tenant_id"], role=Role(row["role"]), key_id=row["id"],
                       key_hash=row["key_hash"])  # fmt: skip
        trust = KEY_TTL_S
        if expires is not None:
            trust = min(trust, (expires - now).total_seconds())
        self._remember(self._keys, ref, (who, self.clock() + trust))
        return who

    @staticmethod
    async def _used(conn_of: Any, key_id: str, now: datetime) -> None:
        """Best effort, in a transaction of its own: a read must not fail because the
        store cannot take this write (a full disk)."""
        try:
            async with conn_of() as conn:
                await keys_q.used(conn, key_id, now, now - timedelta(seconds=LAST_USED_EVERY_S))
        except Exception as exc:
            log.warning("key.last_used_not_written", key_id=key_id, error=str(exc))

    def forget_key(self, key_id: str) -> None:
        for digest in [d for d, (who, _) in self._keys.items() if who.key_id == key_id]:
            del self._keys[digest]

    def forget_tenant(self, tenant_id: str) -> None:
        for digest in [d for d, (who, _) in self._keys.items() if who.tenant_id == tenant_id]:
            del self._keys[digest]
        for digest in [d for d, w in self._workers.items() if w.tenant_id == tenant_id]:
            del self._workers[digest]
        for wid in [i for i, e in self._enrolled.items() if e.who.tenant_id == tenant_id]:
            del self._enrolled[wid]

    @staticmethod
    def _remember(cache: dict[str, Any], digest: str, value: Any) -> None:
        if len(cache) >= MAX_CACHED:
            cache.clear()
        cache[digest] = value


async def api_identity(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    core = request.app.state.core
    core.refusals.check(request.client.host if request.client else None)
    if creds is None or not creds.credentials:
        raise Unauthenticated("an API key or token is required: Authorization: Bearer <key>")
    who = await identity_of(core, creds.credentials)
    request.state.caller = who.key_id
    request.state.tenant = who.tenant_id
    return who


async def identity_of(core: Any, secret: str) -> Identity:
    """Who an API key or token is (the API's bearer, the dashboard's session cookie)."""
    if looks_like_token(secret):
        claims = await core.tokens.verify(core.store.tx, secret)
        who: Identity = await core.credentials.key_by_id(
            core.store.tx, claims["sub"], core.clock.now(), claims["kh"]
        )
        if who.tenant_id != claims["tid"]:
            raise Unauthenticated("invalid API token")
        return replace(who, token=True)
    key: Identity = await core.credentials.key(core.store.tx, hash_secret(secret), core.clock.now())
    return key


async def authorize(
    scopes: SecurityScopes, identity: Annotated[Identity, Depends(api_identity)]
) -> Identity:
    """The one place a permission is checked: those the route names (``require``)."""
    for name in scopes.scopes:
        if not allows(identity.role, Permission(name)):
            raise PermissionDenied(f"this needs the {name} permission, which a"
                                   f" {identity.role} key does not have")  # fmt: skip
    return identity


async def scraper(
    scopes: SecurityScopes,
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity | None:
    """``GET /metrics``: the scrape token of the settings (None), or a key holding the
    route's permission."""
    token = request.app.state.core.settings.metrics_token
    if (
        token is not None
        and creds is not None
        and hmac.compare_digest(
            creds.credentials.encode(), token.get_secret_value().strip().encode()
        )
    ):
        return None
    return await authorize(scopes, await api_identity(request, creds))


def require(permission: Permission) -> Any:
    """The dependency of a route that needs ``permission``. The OpenAPI document names it
    in the route's security requirement (``{"HTTPBearer": ["jobs.read"]}``), so the route
    table itself says what each route needs."""
    return Security(authorize, scopes=[permission.value])


async def worker_identity(
    request: Request, token: Annotated[str | None, Depends(_worker_token)]
) -> WorkerIdentity:
    core = request.app.state.core
    core.refusals.check(request.client.host if request.client else None)
    who: WorkerIdentity
    if (header := request.headers.get(signing.SIGNATURE_HEADER)) is not None:
        try:
            s = signing.parse(header)
        except signing.BadSignature as exc:
            raise Unauthenticated(str(exc)) from None
        who = await core.credentials.signed(core.store.tx, s, core.clock.now(), request.method,
                                            _target(request), await request.body())  # fmt: skip
    elif token:
        who = await core.credentials.worker(core.store.tx, hash_secret(token.strip()))
    else:
        raise Unauthenticated(f"a worker token is required: {WORKER_TOKEN_HEADER}"
                              f" (or a signed request: {signing.SIGNATURE_HEADER})")  # fmt: skip
    request.state.caller = who.worker_id
    request.state.tenant = who.tenant_id
    return who


def _target(request: Request) -> str:
    """The path and query as the client sent them, which is what it signed."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    return (raw + b"?" + query if query else raw).decode("latin-1")


AnyKey = Annotated[Identity, Security(authorize, scopes=[])]  # any valid key: no permission
JobsRead = Annotated[Identity, require(Permission.JOBS_READ)]
JobsSubmit = Annotated[Identity, require(Permission.JOBS_SUBMIT)]
WorkersAdmin = Annotated[Identity, require(Permission.WORKERS_ADMIN)]
KeysAdmin = Annotated[Identity, require(Permission.KEYS_ADMIN)]
AuditRead = Annotated[Identity, require(Permission.AUDIT_READ)]
TenantsAdmin = Annotated[Identity, require(Permission.TENANTS_ADMIN)]
Worker = Annotated[WorkerIdentity, Depends(worker_identity)]


BOOTSTRAP_KEY_NAME = "bootstrap admin"  # reserved: no key is created with it through the API


def is_bootstrap(row: Any) -> bool:
    """Whether a stored key is the bootstrap key (CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY's)."""
    return bool(row["tenant_id"] == DEFAULT_TENANT and row["name"] == BOOTSTRAP_KEY_NAME
                and row["role"] == Role.OPERATOR.value)  # fmt: skip


def key_values(
    tenant_id: str, name: str, role: Role, now: datetime, *, secret: str | None = None,
    expires_at: datetime | None = None, key_id: str | None = None,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """A new key's plaintext (``secret``, or a fresh one) and the row that stores it."""
    key = secret or new_secret("ck")
    return key, {
        "id": key_id or new_id("key"), "tenant_id": tenant_id, "name": name, "role": role.value,
        "key_hash": hash_secret(key), "prefix": key[:KEY_PREFIX_CHARS] if not secret else None,
        "expires_at": expires_at, "created_at": now,
    }  # fmt: skip


async def ensure_operator_key(core: Any, bootstrap: str | None) -> str | None:
    """First start: create the operator's key. Returns its plaintext if generated here.

    A bootstrap key (CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY) is made valid on every start instead,
    so automation can always reach a coordinator without scraping its output.
    """
    try:
        return await _ensure_operator_key(core, bootstrap)
    except IntegrityError:
        # Another coordinator of this store, starting at the same moment, made it first:
        # looked at again, it is there (and only the first start's key is ever printed).
        return await _ensure_operator_key(core, bootstrap)


async def _ensure_operator_key(core: Any, bootstrap: str | None) -> str | None:
    async with core.tx("coordinator start") as t:
        if bootstrap:
            digest = hash_secret(bootstrap)
            # The key this replaces, if another was the bootstrap key before, stops working;
            # a key of that name in another tenant or of another role is none of its business.
            replaced = await keys_q.named_except(t.conn, DEFAULT_TENANT, BOOTSTRAP_KEY_NAME,
                                                 Role.OPERATOR.value, digest)  # fmt: skip
            await t.apply([DeleteKey(r["id"], DEFAULT_TENANT,
                                     Why(message="replaced by another bootstrap key"))
                           for r in replaced])  # fmt: skip
            if await keys_q.by_hash(t.conn, digest) is None:
                _, row = key_values(DEFAULT_TENANT, BOOTSTRAP_KEY_NAME, Role.OPERATOR, t.now,
                                    secret=bootstrap)  # fmt: skip
                await t.apply([InsertKey(row, Why(message="the bootstrap key"))])
            return None
        if await keys_q.count(t.conn):
            return None
        key, row = key_values(DEFAULT_TENANT, "admin", Role.OPERATOR, t.now)
        await t.apply([InsertKey(row, Why(message="the first start's key"))])
        return key
