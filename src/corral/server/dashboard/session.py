"""Who is looking at the dashboard, and whether a form really came from it.

A login trades an API key (or an API token) for an API token in an HttpOnly, SameSite=Strict
cookie: the key itself is never stored in the browser, and the token is checked on every
request exactly as the API checks a bearer (``auth.identity_of``), so revoking or rotating
the key, or suspending its tenant, ends the session at once.

Every state-changing request (each is a POST) must carry the session's CSRF token, an HMAC
of the session's own secret that a page of another site cannot read or compute, and come
from this origin (``Origin``, else ``Referer``, when the browser sends either).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.datastructures import FormData

from corral.model import Permission, PermissionDenied, Unauthenticated, allows
from corral.server import audit
from corral.server.auth import Identity, identity_of, key_tag

COOKIE = "corral_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_FIELDS = 50


class LoginNeeded(Exception):
    """No valid session: a page sends its reader to the login page."""


@dataclass(frozen=True)
class Viewer:
    who: Identity
    csrf: str

    def may(self, permission: Permission) -> bool:
        return allows(self.who.role, permission)

    def need(self, permission: Permission) -> None:
        if not self.may(permission):
            raise PermissionDenied(f"this needs the {permission.value} permission, which a"
                                   f" {self.who.role} key does not have")  # fmt: skip


def csrf_of(session: str) -> str:
    return hmac.new(session.encode(), b"corral dashboard csrf", hashlib.sha256).hexdigest()


async def viewer(request: Request) -> Viewer:
    secret = request.cookies.get(COOKIE)
    if not secret:
        raise LoginNeeded()
    core = request.app.state.core
    try:
        who = await identity_of(core, secret)
    except Unauthenticated:
        raise LoginNeeded() from None
    request.state.caller, request.state.tenant = who.key_id, who.tenant_id
    return Viewer(who, csrf_of(secret))


def same_origin(request: Request) -> None:
    """Refuse a request that says it came from a page of another origin."""
    own = (request.url.scheme, request.url.netloc)
    origin = request.headers.get("origin")
    if origin is not None:
        if origin == "null" or _origin(origin) != own:
            raise PermissionDenied("a cross-origin request to the dashboard is refused")
        return
    referer = request.headers.get("referer")
    if referer is not None and _origin(referer) != own:
        raise PermissionDenied("a cross-site request to the dashboard is refused")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


async def form_of(request: Request, v: Viewer) -> FormData:
    """A state-changing request's form, once its origin and CSRF token are checked."""
    same_origin(request)
    form = await request.form(max_fields=MAX_FORM_FIELDS, max_files=0)
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), v.csrf.encode()):
        raise PermissionDenied("the form's CSRF token is missing or wrong: reload the page")
    return form


async def login(request: Request, secret: str) -> tuple[str, int]:
    """The session cookie's value and lifetime for an API key or token; Unauthenticated
    (recorded as any refused credential is) otherwise."""
    core = request.app.state.core
    core.refusals.check(request.client.host if request.client else None)
    try:
        who = await identity_of(core, secret)
    except Unauthenticated as exc:
        await audit.refused(core, request, exc)
        raise
    seconds = core.settings.dashboard_session_s
    if who.token:  # a token is its own session, for as long as it lives
        claims = await core.tokens.verify(core.store.tx, secret)
        return secret, max(int(claims["exp"]) - int(core.clock.now().timestamp()), 0)
    token, _ = await core.tokens.issue(core.store.tx, who.key_id, key_tag(who.key_hash),
                                       who.tenant_id, who.role, seconds)  # fmt: skip
    return token, seconds


Looking = Annotated[Viewer, Depends(viewer)]
