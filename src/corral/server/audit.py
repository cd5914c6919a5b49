"""The audit log: the history read as who did what, when, from where, with what outcome.

Every change already is an entry of the history with its actor, cause and source address
(``Tx.apply``); what the history does not hold is a request that was refused, so those
are recorded here, and a source that keeps failing to authenticate is slowed down:

- a refused authentication (401) counts against its address; past
  ``auth_failures_per_minute`` in a moving minute the address is answered 429, without its
  credentials being looked at, until the minute has passed (per coordinator: the counts
  live in its memory, as ``limits`` keeps them);
- refusals are recorded (``auth.refused``, ``access.denied``) while their address is under
  the same budget, so that a flood of garbage costs the store a bounded number of writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from fastapi import Request

from corral.model import CorralError, InvalidInput, Unauthenticated
from corral.model.changes import Record, Why
from corral.model.history import Kind
from corral.protocol import EventList
from corral.server.core import Core
from corral.server.history import as_page, cursor_after
from corral.store import history as history_q

log = structlog.get_logger("corral.audit")
NO_TENANT = ""  # a refusal whose tenant nobody knows: operators see it


async def refused(core: Core, request: Request, exc: CorralError) -> None:
    """A 401 or 403: counted against its address (``auth.Refusals``) and, within its
    budget, recorded."""
    source = request.client.host if request.client else None
    if not core.refusals.refused(source, exc.status):
        return
    route = request.scope.get("route")
    kind = Kind.AUTH_REFUSED if exc.status == Unauthenticated.status else Kind.ACCESS_DENIED
    tenant = getattr(request.state, "tenant", None) or NO_TENANT
    why = Why(message=exc.detail[:500], actor=getattr(request.state, "caller", None),
              detail={"method": request.method, "route": getattr(route, "path", None),
                      "status": exc.status})  # fmt: skip
    try:
        async with core.tx() as t:
            await t.apply([Record(kind, tenant, why=why)])
    except Exception as e:
        log.warning("audit.not_written", kind=kind.value, error=str(e))


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput("since is not an ISO 8601 time", field="since") from None
    if when.tzinfo is None:
        raise InvalidInput("since needs a time zone (…Z or …+00:00)", field="since")
    return when


async def listing(
    core: Core, tenant_id: str | None, *, since: str | None, actor: str | None,
    action: str | None, cursor: str | None, limit: int,
) -> EventList:  # fmt: skip
    """Oldest first. ``tenant_id`` None: every tenant's (an operator's view). ``action`` is
    an entry's kind (``key.created``) or a prefix of kinds ending in ``*`` (``key.*``)."""
    args: dict[str, Any] = {"since": _since(since), "actor": actor, "action": action}
    after = cursor_after(cursor)
    async with core.tx() as t:
        rows = await history_q.audit(t.conn, tenant_id, after=after, limit=limit, **args)
    return as_page(rows, limit)
