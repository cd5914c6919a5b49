"""Tenants and API keys: onboarding, listing, suspending; creating, rotating, revoking keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from corral.model import Role, TenantStatus
from corral.protocol._wire import Wire

__all__ = [
    "MAX_KEY_LIFETIME_S",
    "MAX_TOKEN_S",
    "KeyCreate",
    "KeyCreated",
    "KeyList",
    "KeyView",
    "Onboarded",
    "QuotaSet",
    "TenantCreate",
    "TenantList",
    "TenantView",
    "TokenIssued",
    "TokenRequest",
]

_Name = Annotated[str, Field(min_length=1, max_length=200)]
MAX_KEY_LIFETIME_S = 10 * 366 * 86400  # ten years: past it, say "never" (no expiry)


class TenantCreate(Wire):
    name: _Name = Field(description="unique among tenants")


class TenantView(BaseModel):
    id: str
    name: str
    status: TenantStatus
    created_at: datetime
    suspended_at: datetime | None = None
    max_running_jobs: int | None = Field(default=None, description="quota; None: no cap")
    max_gpus: int | None = Field(default=None, description="quota; None: no cap")


class QuotaSet(Wire):
    """POST /api/admin/tenants/{id}/quota: caps on what a tenant runs at once (None: none).
    Jobs past a cap wait, queued; what already runs goes on."""

    max_running_jobs: int | None = Field(default=None, ge=0, le=1_000_000)
    max_gpus: int | None = Field(default=None, ge=0, le=1_000_000)


class TenantList(BaseModel):
    tenants: list[TenantView]


class Onboarded(BaseModel):
    tenant_id: str
    name: str
    key_id: str
    api_key: str = Field(description="the tenant's first admin key: shown only once")


class KeyCreate(Wire):
    name: _Name = Field(description="unique in the tenant")
    role: Role = Role.MEMBER
    expires_in_s: Annotated[int, Field(ge=60, le=MAX_KEY_LIFETIME_S)] | None = Field(
        default=None, description="seconds until it stops working; none: it does not expire"
    )


class KeyView(BaseModel):
    id: str
    name: str
    role: Role
    prefix: str | None = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="to a minute")


class KeyCreated(KeyView):
    key: str = Field(description="shown only once")


class KeyList(BaseModel):
    keys: list[KeyView]


MAX_TOKEN_S = 24 * 3600


class TokenRequest(Wire):
    expires_in_s: Annotated[int, Field(ge=60, le=MAX_TOKEN_S)] = Field(
        default=900, description="seconds it is valid: 15 minutes unless asked otherwise"
    )


class TokenIssued(BaseModel):
    """A JWT, sent as ``Authorization: Bearer <access_token>`` wherever a key is."""

    access_token: str
    token_type: str = "bearer"
    expires_at: datetime
    expires_in_s: int
    key_id: str = Field(description="the API key it speaks for: revoking that ends it")
