"""How a command calls the coordinator: one ``corral.client.AsyncClient`` with a person's
patience, and its typed errors turned into one line and the exit code the README promises."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import stamina

from corral.cli._exit import ExitCode, Failure
from corral.cli._output import err, shown
from corral.client import AsyncClient, CorralError, Unauthenticated, Unreachable
from corral.local import BadSetting, FleetError
from corral.protocol.transport import insecure

T = TypeVar("T")


def connect(url: str | None, api_key: str | None) -> AsyncClient:
    """``--url`` / ``--api-key`` (their env vars already read by Typer), and the root's
    ``--token`` / ``--token-file``, which win over a key; a person is waiting, so give up
    after ~15 s rather than a script's patient minute."""
    # The CLI says in one line what failed; stamina's per-retry warnings would bury that
    # line. Set here, not at import, so a worker started by `corral worker` keeps them.
    stamina.instrumentation.set_on_retry_hooks([])
    client = AsyncClient(url, api_key, token=_root["token"], token_file=_root["file"],
                         ca_file=_root["ca_file"], verify=_root["verify"], attempts=4,
                         retry_timeout=15.0)  # fmt: skip
    for said in insecure(client.url, client.verifies):
        err.print(f"corral: warning: {said}", markup=False, highlight=False, soft_wrap=True)
    return client


# The root's --token, --token-file, --ca-file and --ssl-no-verify of this invocation (set
# by its callback, before any command runs): every command's client uses them.
_root: dict[str, Any] = {"token": None, "file": None, "ca_file": None, "verify": None}


def use_root(
    token: str | None, token_file: Path | None, ca_file: Path | None, no_verify: bool
) -> None:
    _root.update(token=token, file=token_file, ca_file=ca_file, verify=False if no_verify else None)


def explain(exc: CorralError | FleetError) -> Failure:
    """One line for the terminal: 4xx -> 2, no coordinator -> 4, 5xx -> 5; a local process
    that failed -> 1, a local setting that cannot be used -> 2."""
    if isinstance(exc, FleetError):
        code = ExitCode.USAGE if isinstance(exc, BadSetting) else ExitCode.JOB_FAILED
        return Failure(shown(exc.message), code)
    if isinstance(exc, Unreachable):
        hint = "(is it running? set --url or CORRAL_URL)"
        if "CERTIFICATE_VERIFY_FAILED" in exc.detail:
            hint = ("(a coordinator with its own CA: pass --ca-file <its data dir>/pki/ca.pem,"
                    " or set CORRAL_CA_FILE)")  # fmt: skip
        return Failure(f"cannot reach the coordinator: {shown(exc.detail)} {hint}",
                       ExitCode.UNREACHABLE)  # fmt: skip
    fields = "; ".join(
        f"{e.get('field')}: {e.get('message')}"
        for e in exc.body.get("errors") or []
        if isinstance(e, dict)
    )
    detail = exc.detail or exc.code
    if fields and fields not in detail:
        detail = f"{detail} ({fields})"
    if exc.field == "url" and not exc.body:
        detail += " (set --url or CORRAL_URL)"
    if isinstance(exc, Unauthenticated):
        detail += " (set --api-key or CORRAL_API_KEY)"
    if exc.status >= 500:
        return Failure(f"coordinator error {exc.status}: {shown(detail)}", ExitCode.SERVER_ERROR)
    if exc.body:  # the coordinator's answer: its stable code helps a search or a bug report
        detail = f"{detail} [{exc.code}]"
    return Failure(shown(detail), ExitCode.USAGE)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; its errors end as a ``Failure``, never a traceback."""
    try:
        return asyncio.run(_guard(coro))
    except KeyboardInterrupt:
        raise Failure("interrupted", ExitCode.INTERRUPTED) from None


async def _guard(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    except (CorralError, FleetError) as exc:
        raise explain(exc) from exc
    except httpx.InvalidURL as exc:  # a path or query httpx refuses: still one line
        raise Failure(f"bad URL: {shown(exc)}") from None
