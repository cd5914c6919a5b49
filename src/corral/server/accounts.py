"""Tenants and API keys: onboarding, suspension, and keys that are created, rotated and
revoked. Every change goes through ``Tx.apply``, so each is an entry of the history with
its actor and cause (the audit's source)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from corral.model import (
    AlreadyExists,
    Conflict,
    NotFound,
    PermissionDenied,
    Role,
    TenantStatus,
    check_grant,
    decide,
)
from corral.model.changes import (
    Cancel,
    Change,
    DeleteKey,
    InsertKey,
    InsertTenant,
    MoveTenant,
    Notify,
    RotateKey,
    SetQuota,
    Why,
)
from corral.model.history import Reason
from corral.model.snapshot import JobSnap, WorkerSnap
from corral.protocol import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyView,
    Onboarded,
    QuotaSet,
    TenantCreate,
    TenantList,
    TenantView,
    TokenIssued,
    TokenRequest,
)
from corral.server.auth import (
    BOOTSTRAP_KEY_NAME,
    KEY_PREFIX_CHARS,
    Identity,
    hash_secret,
    is_bootstrap,
    key_tag,
    key_values,
    new_id,
    new_secret,
)
from corral.server.core import Core, Tx
from corral.store import as_utc
from corral.store import jobs as jobs_q
from corral.store import keys as keys_q
from corral.store import workers as workers_q

FIRST_KEY_NAME = "admin"
SELF_SERVICE = "self-service"  # the actor of a tenant onboarded without an operator


def tenant_view(row: RowMapping) -> TenantView:
    return TenantView(id=row["id"], name=row["name"], status=TenantStatus(row["status"]),
                      created_at=as_utc(row["created_at"]),
                      suspended_at=as_utc(row["suspended_at"]),
                      max_running_jobs=row["max_running_jobs"],
                      max_gpus=row["max_gpus"])  # fmt: skip


def key_view(row: RowMapping) -> KeyView:
    return KeyView(id=row["id"], name=row["name"], role=Role(row["role"]), prefix=row["prefix"],
                   created_at=as_utc(row["created_at"]), expires_at=as_utc(row["expires_at"]),
                   last_used_at=as_utc(row["last_used_at"]))  # fmt: skip


# ---- tenants (operators) ----------------------------------------------------------------


async def onboard(core: Core, who: Identity | None, body: TenantCreate) -> Onboarded:
    """A tenant and its first admin key, whose plaintext only this answer holds. ``who``
    None: self-service (the server allows it, within its address's budget)."""
    actor = who.key_id if who is not None else SELF_SERVICE
    taken = AlreadyExists(f"a tenant named {body.name!r} exists", field="name")
    try:
        async with core.tx(actor) as t:
            if await keys_q.tenant_named(t.conn, body.name) is not None:
                raise taken
            tenant_id = new_id("t")
            key, row = key_values(tenant_id, FIRST_KEY_NAME, Role.ADMIN, t.now)
            await t.apply([
                InsertTenant({"id": tenant_id, "name": body.name, "created_at": t.now,
                              "status": TenantStatus.ACTIVE.value}, Why(actor=actor)),
                InsertKey(row, Why(actor=actor, message="the tenant's first admin key")),
            ])  # fmt: skip
    except IntegrityError as exc:
        # Another onboarding of the name committed between this one's check and its insert.
        async with core.tx() as t:
            if await keys_q.tenant_named(t.conn, body.name) is not None:
                raise taken from exc
        raise
    return Onboarded(tenant_id=tenant_id, name=body.name, key_id=row["id"], api_key=key)


async def onboard_self(core: Core, body: TenantCreate, source: str | None) -> Onboarded:
    if not core.settings.self_onboarding:
        raise PermissionDenied("self-service onboarding is off on this coordinator: an"
                               " operator onboards tenants (corral onboard)")  # fmt: skip
    core.refusals.onboard(source)
    return await onboard(core, None, body)


async def tenants(core: Core) -> TenantList:
    async with core.tx() as t:
        return TenantList(tenants=[tenant_view(r) for r in await keys_q.all_tenants(t.conn)])


async def _tenant(t: Tx, tenant_id: str) -> RowMapping:
    row = await keys_q.tenant(t.conn, tenant_id)
    if row is None:
        raise NotFound(f"no tenant {tenant_id}")
    return row


async def tenant(core: Core, tenant_id: str) -> TenantView:
    async with core.tx() as t:
        return tenant_view(await _tenant(t, tenant_id))


async def suspend(core: Core, who: Identity, tenant_id: str) -> TenantView:
    """Its keys are refused and its workers go offline (their attempts requeued, to run
    once it is resumed) and cannot register again."""
    if tenant_id == who.tenant_id:
        raise Conflict("an operator's own tenant cannot be suspended")
    async with core.tx(who.key_id) as t:
        row = await _tenant(t, tenant_id)
        moved = MoveTenant(tenant_id, TenantStatus.ACTIVE, TenantStatus.SUSPENDED,
                           {"suspended_at": t.now}, Why(actor=who.key_id))  # fmt: skip
        # The status first, then its workers, locked: a register holds the tenant's row
        # (FOR SHARE) until it commits, so one that read the tenant active has committed
        # before this reads its worker, and one that comes later waits and is refused.
        if row["status"] == TenantStatus.ACTIVE and not await t.apply([moved]):
            offline: list[Change] = []
            for w in await workers_q.locked_of(t.conn, tenant_id):
                active = [JobSnap.of(j) for j in await jobs_q.active_on(t.conn, w["id"])]
                offline += decide.go_offline(
                    WorkerSnap.of(w), active, Reason.TENANT_SUSPENDED, "its tenant was suspended",
                    now=t.now, policy=t.policy)  # fmt: skip
            # What it runs on the operator's shared workers stops too (they stay up).
            for j in map(JobSnap.of, await jobs_q.active_on_shared(t.conn, tenant_id)):
                if j.worker_id is not None:
                    stop = Notify(j.worker_id, j.tenant_id, Cancel(j.id, j.attempt))
                    said = "its tenant was suspended"
                    offline += [*decide.lose([j], Reason.TENANT_SUSPENDED, said, now=t.now,
                                             policy=t.policy), stop]  # fmt: skip
            await t.apply(offline)
        return tenant_view(await _tenant(t, tenant_id))


async def set_quota(core: Core, who: Identity, tenant_id: str, body: QuotaSet) -> TenantView:
    async with core.tx(who.key_id) as t:
        await _tenant(t, tenant_id)
        await t.apply([SetQuota(tenant_id, body.max_running_jobs, body.max_gpus,
                                Why(actor=who.key_id))])  # fmt: skip
        return tenant_view(await _tenant(t, tenant_id))


async def resume(core: Core, who: Identity, tenant_id: str) -> TenantView:
    async with core.tx(who.key_id) as t:
        row = await _tenant(t, tenant_id)
        if row["status"] == TenantStatus.SUSPENDED:
            await t.apply([MoveTenant(tenant_id, TenantStatus.SUSPENDED, TenantStatus.ACTIVE,
                                      {"suspended_at": None}, Why(actor=who.key_id))])  # fmt: skip
        return tenant_view(await _tenant(t, tenant_id))


# ---- API keys (a tenant's admins) -------------------------------------------------------


async def create_key(core: Core, who: Identity, body: KeyCreate) -> KeyCreated:
    check_grant(who.role, body.role)
    if body.name == BOOTSTRAP_KEY_NAME:
        raise Conflict(f"the name {body.name!r} is reserved for the bootstrap key, which a"
                       " start with CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY replaces",
                       field="name")  # fmt: skip
    taken = AlreadyExists(f"a key named {body.name!r} exists", field="name")
    try:
        async with core.tx(who.key_id) as t:
            if await keys_q.named(t.conn, who.tenant_id, body.name) is not None:
                raise taken
            expires = t.now + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
            key, row = key_values(who.tenant_id, body.name, body.role, t.now, expires_at=expires)
            await t.apply([InsertKey(row, Why(actor=who.key_id))])
            stored = await keys_q.get(t.conn, who.tenant_id, row["id"])
    except IntegrityError as exc:
        # Another key of the name committed between this one's check and its insert.
        async with core.tx() as t:
            if await keys_q.named(t.conn, who.tenant_id, body.name) is not None:
                raise taken from exc
        raise
    assert stored is not None
    return KeyCreated(**key_view(stored).model_dump(), key=key)


async def keys(core: Core, tenant_id: str) -> KeyList:
    async with core.tx() as t:
        return KeyList(keys=[key_view(r) for r in await keys_q.of_tenant(t.conn, tenant_id)])


async def _key(t: Tx, who: Identity, key_id: str) -> RowMapping:
    row = await keys_q.get(t.conn, who.tenant_id, key_id)
    if row is None:
        raise NotFound(f"no key {key_id}")
    check_grant(who.role, Role(row["role"]))
    return row


async def revoke_key(core: Core, who: Identity, key_id: str) -> None:
    """It stops working at once here, and within ``KEY_TTL_S`` on every coordinator."""
    async with core.tx(who.key_id) as t:
        await _key(t, who, key_id)
        await t.apply([DeleteKey(key_id, who.tenant_id, Why(actor=who.key_id))])


async def rotate_key(core: Core, who: Identity, key_id: str) -> KeyCreated:
    """A new secret for the same key (name, role, expiry); the old secret stops working."""
    async with core.tx(who.key_id) as t:
        row = await _key(t, who, key_id)
        if is_bootstrap(row):
            raise Conflict("the bootstrap key is what CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY says:"
                           " change it there and restart")  # fmt: skip
        key = new_secret("ck")
        fields = {"key_hash": hash_secret(key), "prefix": key[:KEY_PREFIX_CHARS]}
        await t.apply([RotateKey(key_id, who.tenant_id, fields, Why(actor=who.key_id))])
        stored = await keys_q.get(t.conn, who.tenant_id, key_id)
    assert stored is not None
    return KeyCreated(**key_view(stored).model_dump(), key=key)


# ---- API tokens -------------------------------------------------------------------------


async def issue_token(core: Core, who: Identity, body: TokenRequest) -> TokenIssued:
    """A short-lived token for the key that asks: a token cannot renew itself."""
    if who.token:
        raise PermissionDenied("a token is exchanged for a key, not for another token")
    token, expires = await core.tokens.issue(core.store.tx, who.key_id, key_tag(who.key_hash),
                                             who.tenant_id, who.role,
                                             body.expires_in_s)  # fmt: skip
    return TokenIssued(access_token=token, expires_at=expires, expires_in_s=body.expires_in_s,
                       key_id=who.key_id)  # fmt: skip
