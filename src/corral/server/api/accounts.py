"""Tenants (permission tenants.admin: operators) and a tenant's API keys (keys.admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from corral.model import Role
from corral.protocol import (
    EventList,
    KeyCreate,
    KeyCreated,
    KeyList,
    Onboarded,
    QuotaSet,
    TenantCreate,
    TenantList,
    TenantView,
    TokenIssued,
    TokenRequest,
)
from corral.server import accounts, audit
from corral.server.auth import AnyKey, AuditRead, KeysAdmin, TenantsAdmin

tenants = APIRouter(prefix="/api/admin/tenants", tags=["tenants"])
keys = APIRouter(prefix="/api/admin/keys", tags=["keys"])
auth = APIRouter(prefix="/api/auth", tags=["auth"])
public = APIRouter(tags=["tenants"])
audit_log = APIRouter(prefix="/api/admin/audit", tags=["audit"])


@audit_log.get("", response_model=EventList)
async def audit_entries(
    request: Request,
    who: AuditRead,
    since: Annotated[str | None, Query(max_length=40, description="ISO 8601, with a zone")] = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100, description="a kind, or key.*")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventList:
    """Who did what, when, from where, and what was refused: the tenant's entries, or
    every tenant's for an operator. Oldest first."""
    tenant = None if who.role is Role.OPERATOR else who.tenant_id
    return await audit.listing(request.app.state.core, tenant, since=since, actor=actor,
                               action=action, cursor=cursor, limit=limit)  # fmt: skip


@auth.post("/token", response_model=TokenIssued)
async def token(request: Request, who: AnyKey, body: TokenRequest) -> TokenIssued:
    """Exchange the API key in the Authorization header for a short-lived token (a JWT)
    that is accepted wherever the key is, with the key's role, until it expires or the
    key is revoked or rotated."""
    return await accounts.issue_token(request.app.state.core, who, body)


@tenants.post("", response_model=Onboarded, status_code=201)
async def onboard(request: Request, who: TenantsAdmin, body: TenantCreate) -> Onboarded:
    """A tenant and its first admin key (shown only in this answer)."""
    return await accounts.onboard(request.app.state.core, who, body)


@public.post("/api/onboard", response_model=Onboarded, status_code=201,
             responses={403: {"description": "self-service onboarding is off"},
                        429: {"description": "too many from this address"}})  # fmt: skip
async def onboard_self(request: Request, body: TenantCreate) -> Onboarded:
    """Self-service: a tenant and its first admin key, without an operator, when the server
    was started with --allow-self-onboarding; a few an hour from one address."""
    source = request.client.host if request.client else None
    return await accounts.onboard_self(request.app.state.core, body, source)


@tenants.get("", response_model=TenantList)
async def list_tenants(request: Request, who: TenantsAdmin) -> TenantList:
    return await accounts.tenants(request.app.state.core)


@tenants.get("/{tenant_id}", response_model=TenantView)
async def get_tenant(request: Request, who: TenantsAdmin, tenant_id: str) -> TenantView:
    return await accounts.tenant(request.app.state.core, tenant_id)


@tenants.post("/{tenant_id}/suspend", response_model=TenantView)
async def suspend_tenant(request: Request, who: TenantsAdmin, tenant_id: str) -> TenantView:
    """Its keys are refused; its workers go offline and cannot register until resumed."""
    return await accounts.suspend(request.app.state.core, who, tenant_id)


@tenants.post("/{tenant_id}/quota", response_model=TenantView)
async def set_tenant_quota(
    request: Request, who: TenantsAdmin, tenant_id: str, body: QuotaSet
) -> TenantView:
    """Caps on its running jobs and the GPUs they hold (null: no cap); jobs past one wait."""
    return await accounts.set_quota(request.app.state.core, who, tenant_id, body)


@tenants.post("/{tenant_id}/resume", response_model=TenantView)
async def resume_tenant(request: Request, who: TenantsAdmin, tenant_id: str) -> TenantView:
    return await accounts.resume(request.app.state.core, who, tenant_id)


@keys.post("", response_model=KeyCreated, status_code=201)
async def create_key(request: Request, who: KeysAdmin, body: KeyCreate) -> KeyCreated:
    """A key of a role no higher than the caller's; its plaintext is in this answer only."""
    return await accounts.create_key(request.app.state.core, who, body)


@keys.get("", response_model=KeyList)
async def list_keys(request: Request, who: KeysAdmin) -> KeyList:
    return await accounts.keys(request.app.state.core, who.tenant_id)


@keys.delete("/{key_id}", status_code=204)
async def revoke_key(request: Request, who: KeysAdmin, key_id: str) -> Response:
    await accounts.revoke_key(request.app.state.core, who, key_id)
    return Response(status_code=204)


@keys.post("/{key_id}/rotate", response_model=KeyCreated)
async def rotate_key(request: Request, who: KeysAdmin, key_id: str) -> KeyCreated:
    """A new secret for the key; the old one stops working."""
    return await accounts.rotate_key(request.app.state.core, who, key_id)
