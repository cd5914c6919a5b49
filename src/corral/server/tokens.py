"""Short-lived API tokens: an API key exchanged for a JWT (``POST /api/auth/token``).

PyJWT with one explicit algorithm (HS256: the coordinators that issue a token are the ones
that verify it, so a shared secret is enough and nothing needs a public key), an expiry, an
audience, an issuer and a key id. The signing secrets live in the store, so every
coordinator of a store verifies what any of them issued. Each coordinator reads them again
while it runs (``refresh``: at start, from the reaper, and before it signs with what it read
more than ``REFRESH_S`` ago), so it signs only with a key that was the store's newest a
moment ago; a refresh after ``ROTATE_AFTER_S`` makes a new one. An older key is kept until
its successor has been the newest for longer than any token can live (``PRUNE_AFTER_S``):
by then no coordinator signs with it and nothing it signed is still valid.

A token names the API key it was issued for (``sub``) and the secret it had then (``kh``, a
prefix of its stored hash); that key is looked up as a key is (``Credentials.key_by_id``),
so revoking or rotating the key, or suspending its tenant, ends its tokens.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from corral import protocol
from corral.model import Unauthenticated
from corral.store import as_utc
from corral.store import keys as keys_q

ALGORITHM = "HS256"
ISSUER = "corral"
AUDIENCE = "corral-api"
MAX_TOKEN_S = protocol.MAX_TOKEN_S
ROTATE_AFTER_S = 7 * 86400
REFRESH_S = 60.0  # a coordinator signs only with a key it read as the newest this recently
SKEW_S = 3600.0  # for coordinators whose clocks disagree, and transactions in flight
# Once a key's successor is this old, every coordinator has seen the successor (within
# REFRESH_S) and signed nothing with the older key since, and what it signed has expired.
PRUNE_AFTER_S = MAX_TOKEN_S + REFRESH_S + SKEW_S
RELOAD_EVERY_S = 1.0  # an unknown key id reads the store again at most this often
_REQUIRED = ["exp", "iat", "sub", "aud", "iss", "tid", "kh"]


def looks_like_token(secret: str) -> bool:
    """Whether a bearer secret is a JWT: three dot-separated parts whose first is a JSON
    header. An API key is never one (a generated key has no dots; a bootstrap key that
    would be one is refused at start), so a key with two dots is still taken for a key."""
    if secret.count(".") != 2:
        return False
    # The header alone: a token whose signature was mangled is still a token, and is refused
    # as one (PyJWT's own reading of the header decodes the signature too).
    try:
        header = json.loads(jwt.utils.base64url_decode(secret.split(".", 1)[0]))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict)


def _now() -> datetime:
    # Real time, as PyJWT checks it, whatever clock the coordinator's reaper runs on.
    return datetime.now(UTC)


@dataclass
class Signer:
    keys: dict[str, bytes] = field(default_factory=dict)  # key id -> secret
    newest: str | None = None
    clock: Callable[[], float] = time.monotonic
    _read_at: float | None = None  # when the keys were last read (``clock``)

    async def start(self, conn_of: Any) -> None:
        await self.refresh(conn_of)

    def due(self) -> bool:
        """Whether what was read is too old to sign with."""
        return self._read_at is None or self.clock() - self._read_at >= REFRESH_S

    async def refresh(self, conn_of: Any) -> None:
        """Make a new signing key when the newest is old (or there is none), prune the keys
        whose successor has been the newest for ``PRUNE_AFTER_S``, and read them all."""
        now = _now()
        async with conn_of() as conn:
            rows = await keys_q.signing_keys(conn)  # newest first
            made = [as_utc(r["created_at"]) for r in rows]
            if not made or made[0] < now - timedelta(seconds=ROTATE_AFTER_S):
                secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
                await keys_q.insert_signing_key(
                    conn, {"id": f"sk_{secrets.token_hex(8)}", "secret": secret, "created_at": now}
                )
            # The newest key made before the cutoff is every older key's successor (or its
            # successor's): those are done with.
            settled = [m for m in made if m < now - timedelta(seconds=PRUNE_AFTER_S)]
            if settled and made[-1] < settled[0]:
                await keys_q.prune_signing_keys(conn, settled[0])
        await self._read(conn_of)

    async def _read(self, conn_of: Any) -> None:
        began = self.clock()
        async with conn_of() as conn:
            rows = await keys_q.signing_keys(conn)
        self.keys = {r["id"]: base64.urlsafe_b64decode(r["secret"]) for r in rows}
        self.newest = rows[0]["id"] if rows else None
        self._read_at = began

    async def issue(
        self, conn_of: Any, key_id: str, key_tag: str, tenant_id: str, role: str, seconds: int
    ) -> tuple[str, datetime]:
        if self.due():  # another coordinator may have made a newer one, or it is time to
            await self.refresh(conn_of)
        return self._sign(key_id, key_tag, tenant_id, role, seconds)

    def _sign(
        self, key_id: str, key_tag: str, tenant_id: str, role: str, seconds: int
    ) -> tuple[str, datetime]:
        if self.newest is None:  # pragma: no cover - start() always leaves one
            raise RuntimeError("no signing key: the coordinator has not started")
        now = _now()
        expires = now + timedelta(seconds=seconds)
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": key_id, "kh": key_tag, "tid": tenant_id,
                  "role": role, "iat": now, "exp": expires,
                  "jti": secrets.token_hex(8)}  # fmt: skip
        token = jwt.encode(claims, self.keys[self.newest], algorithm=ALGORITHM,
                           headers={"kid": self.newest})  # fmt: skip
        return token, expires

    async def verify(self, conn_of: Any, token: str) -> dict[str, Any]:
        """Its claims, if a key of this store signed it and it holds; else Unauthenticated."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid API token") from None
        if not isinstance(kid, str):
            raise Unauthenticated("invalid API token: it names no signing key")
        if kid not in self.keys and (
            self._read_at is None or self.clock() - self._read_at >= RELOAD_EVERY_S
        ):
            await self._read(conn_of)  # another coordinator may have made a new one
        secret = self.keys.get(kid)
        if secret is None:
            raise Unauthenticated("invalid API token: unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                options={"require": _REQUIRED},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("this API token has expired: ask for a new one") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid API token") from None
        if not all(isinstance(claims[c], str) for c in ("sub", "tid", "kh")):
            raise Unauthenticated("invalid API token")
        return claims
