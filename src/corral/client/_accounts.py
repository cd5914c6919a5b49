"""The client's calls for tenants (operators) and a tenant's API keys (admins)."""

from __future__ import annotations

from corral.client._valid import by_ref, valid
from corral.model import Role
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
from corral.protocol.transport import Transport


class AccountCalls:
    """Mixed into ``AsyncClient``."""

    _t: Transport

    # ---- tenants (operator) -----------------------------------------------------------

    async def onboard(self, name: str, *, self_service: bool = False) -> Onboarded:
        """A new tenant and its first admin API key (shown only here): with an operator's
        key, or ``self_service`` on a coordinator that allows it (no key needed)."""
        body = valid(TenantCreate, {"name": name}).model_dump(mode="json")
        path = "/api/onboard" if self_service else "/api/admin/tenants"
        return Onboarded.model_validate(await self._t.json("POST", path, json=body))

    async def tenants(self) -> list[TenantView]:
        return TenantList.model_validate(await self._t.json("GET", "/api/admin/tenants")).tenants

    async def tenant(self, ref: str) -> TenantView:
        """A tenant by id, or by its name."""
        return by_ref(await self.tenants(), ref, "tenant")

    async def suspend_tenant(self, ref: str) -> TenantView:
        """Its keys are refused and its workers go offline until it is resumed."""
        tid = (await self.tenant(ref)).id
        body = await self._t.json("POST", f"/api/admin/tenants/{tid}/suspend", idempotent=True)
        return TenantView.model_validate(body)

    async def set_quota(
        self, ref: str, *, max_running_jobs: int | None = None, max_gpus: int | None = None
    ) -> TenantView:
        """Caps on what the tenant runs at once; None: no cap (both are set each time)."""
        tid = (await self.tenant(ref)).id
        quota = valid(QuotaSet, {"max_running_jobs": max_running_jobs, "max_gpus": max_gpus})
        body = await self._t.json("POST", f"/api/admin/tenants/{tid}/quota",
                                  json=quota.model_dump(), idempotent=True)  # fmt: skip
        return TenantView.model_validate(body)

    async def resume_tenant(self, ref: str) -> TenantView:
        tid = (await self.tenant(ref)).id
        body = await self._t.json("POST", f"/api/admin/tenants/{tid}/resume", idempotent=True)
        return TenantView.model_validate(body)

    # ---- API keys (admin) -------------------------------------------------------------

    async def keys(self) -> list[KeyView]:
        """The tenant's API keys (never their secrets)."""
        return KeyList.model_validate(await self._t.json("GET", "/api/admin/keys")).keys

    async def key(self, ref: str) -> KeyView:
        """A key by id, or by its name."""
        return by_ref(await self.keys(), ref, "API key")

    async def create_key(
        self, name: str, *, role: Role | str = Role.MEMBER, expires_in_s: int | None = None
    ) -> KeyCreated:
        """A new API key of the tenant; its secret (``.key``) is shown only here."""
        spec = valid(KeyCreate, {"name": name, "role": role, "expires_in_s": expires_in_s})
        body = await self._t.json("POST", "/api/admin/keys", json=spec.model_dump(mode="json"))
        return KeyCreated.model_validate(body)

    async def revoke_key(self, ref: str) -> KeyView:
        """The key stops working; returns it as it was."""
        found = await self.key(ref)
        await self._t.request("DELETE", f"/api/admin/keys/{found.id}")
        return found

    async def rotate_key(self, ref: str) -> KeyCreated:
        """A new secret for the key; the old one stops working."""
        kid = (await self.key(ref)).id
        return KeyCreated.model_validate(
            await self._t.json("POST", f"/api/admin/keys/{kid}/rotate")
        )

    # ---- API tokens -------------------------------------------------------------------

    async def token(self, expires_in_s: int = 900) -> TokenIssued:
        """A short-lived API token (a JWT) for this client's key: pass it as ``token=`` to
        another client, or send it as the Bearer credential, wherever the key goes."""
        spec = valid(TokenRequest, {"expires_in_s": expires_in_s})
        body = await self._t.json("POST", "/api/auth/token", json=spec.model_dump(mode="json"))
        return TokenIssued.model_validate(body)
