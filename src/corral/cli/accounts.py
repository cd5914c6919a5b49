"""Who may do what: ``corral onboard`` and ``corral tenants ls|suspend|resume|quota``
(operators), ``corral keys create|ls|revoke|rotate`` and ``corral audit`` (a tenant's
admins), ``corral token`` (any key)."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from corral.cli import _output, _parse, _timeline
from corral.cli._api import connect, run
from corral.cli._options import ApiKey, Json, Url
from corral.model import Role
from corral.protocol import EventList, KeyCreated, KeyList, TenantList, TenantView

tenants = typer.Typer(help="List, suspend and resume tenants (operator).", no_args_is_help=True)
keys = typer.Typer(help="The tenant's API keys: create, list, revoke, rotate (admin).",
                   no_args_is_help=True)  # fmt: skip

TenantRef = Annotated[str, typer.Argument(help="Tenant id or name.")]
KeyRef = Annotated[str, typer.Argument(help="Key id or name.")]


def onboard(
    name: Annotated[str, typer.Argument(help='The tenant\'s name, e.g. "My Company".')],
    self_service: Annotated[
        bool,
        typer.Option("--self-service", help="Without a key, where the coordinator allows it."),
    ] = False,
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Create a tenant and its first admin API key (shown once), with the commands that
    make and start its first worker. Needs an operator key, or --self-service on a
    coordinator started with --allow-self-onboarding."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            made = await client.onboard(name, self_service=self_service)
        if as_json:
            _output.print_json({"tenant_id": made.tenant_id, "name": made.name,
                                "key_id": made.key_id, "api_key": made.api_key})  # fmt: skip
            return
        _output.out.print(_output.line("tenant ", _output.styled(made.name, "bold"),
                                       f" ({made.tenant_id})"))  # fmt: skip
        _output.out.print(
            _output.line("admin API key (shown once): ", _output.styled(made.api_key, "bold")),
            soft_wrap=True,
        )
        q = shlex.quote
        _output.err.print("its first worker, made with that key and started on a machine:",
                          markup=False)  # fmt: skip
        _output.err.print(
            _output.line(
                f"  CORRAL_URL={q(client.url)} CORRAL_API_KEY={q(made.api_key)}"
                " corral workers create gpu-1 --persistent\n"
                f"  CORRAL_WORKER__TOKEN=<its token> corral worker --orchestrator-url"
                f" {q(client.url)} --name gpu-1 --persistent"
            ),
            soft_wrap=True,
        )

    run(go())


@tenants.command("ls")
def tenants_ls(as_json: Json = False, url: Url = None, api_key: ApiKey = None) -> None:
    """Every tenant, its status and since when."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            found = await client.tenants()
        if as_json:
            _output.print_json(TenantList(tenants=found))
            return
        rows = [
            (t.name, t.id, _output.state(t.status), _output.ago(t.created_at),
             _output.ago(t.suspended_at) if t.suspended_at else "-", _quota(t))
            for t in found
        ]  # fmt: skip
        cols = ("NAME", "ID", "STATUS", "CREATED", "SUSPENDED", "QUOTA")
        _output.out.print(_output.table(None, cols, rows))

    run(go())


@tenants.command("suspend")
def tenants_suspend(ref: TenantRef, url: Url = None, api_key: ApiKey = None) -> None:
    """Refuse the tenant's keys and take its workers offline (their jobs wait, queued)."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            t = await client.suspend_tenant(ref)
        _output.out.print(_output.line(t.name, f" ({t.id}): {t.status}"))

    run(go())


@tenants.command("quota")
def tenants_quota(
    ref: TenantRef,
    max_running_jobs: Annotated[
        int | None, typer.Option(help="Jobs it runs at once (default: no cap).", min=0)
    ] = None,
    max_gpus: Annotated[
        int | None, typer.Option(help="GPUs its jobs hold at once (default: no cap).", min=0)
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Cap what a tenant runs at once; a cap not given is lifted. Jobs past a cap wait."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            t = await client.set_quota(ref, max_running_jobs=max_running_jobs,
                                       max_gpus=max_gpus)  # fmt: skip
        _output.out.print(_output.line(t.name, f" ({t.id}): {_quota(t)}"))

    run(go())


def _quota(t: TenantView) -> str:
    caps = [f"{t.max_running_jobs} running jobs" if t.max_running_jobs is not None else "",
            f"{t.max_gpus} GPUs" if t.max_gpus is not None else ""]  # fmt: skip
    return "at most " + " and ".join(c for c in caps if c) if any(caps) else "no quota"


@tenants.command("resume")
def tenants_resume(ref: TenantRef, url: Url = None, api_key: ApiKey = None) -> None:
    """Accept the tenant's keys again; its workers may register."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            t = await client.resume_tenant(ref)
        _output.out.print(_output.line(t.name, f" ({t.id}): {t.status}"))

    run(go())


@keys.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name unique in the tenant, e.g. ci.")],
    role: Annotated[Role, typer.Option(help="What it may do.")] = Role.MEMBER,
    expires: Annotated[
        str | None, typer.Option(help="It stops working after this long: 30d, 12h, 90m.")
    ] = None,
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Create an API key and print it (shown once). viewer reads jobs; member submits and
    cancels them; admin also runs workers, keys and the audit; operator manages tenants."""
    seconds = _parse.span(expires, flag="--expires") if expires else None

    async def go() -> None:
        async with connect(url, api_key) as client:
            made = await client.create_key(name, role=role, expires_in_s=seconds)
        _print_key(made, as_json)

    run(go())


@keys.command("ls")
def keys_ls(as_json: Json = False, url: Url = None, api_key: ApiKey = None) -> None:
    """The tenant's keys: name, role, prefix, expiry, last use (never their secrets)."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            found = await client.keys()
        if as_json:
            _output.print_json(KeyList(keys=found))
            return
        rows = [
            (k.name, k.id, k.role, f"{k.prefix}…" if k.prefix else "-",
             f"{k.expires_at.astimezone():%Y-%m-%d %H:%M}" if k.expires_at else "never",
             _output.ago(k.last_used_at) if k.last_used_at else "never")
            for k in found
        ]  # fmt: skip
        cols = ("NAME", "ID", "ROLE", "PREFIX", "EXPIRES", "USED")
        _output.out.print(_output.table(None, cols, rows))

    run(go())


@keys.command("revoke")
def keys_revoke(ref: KeyRef, url: Url = None, api_key: ApiKey = None) -> None:
    """Delete a key: it stops working at once."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            k = await client.revoke_key(ref)
        _output.out.print(_output.line(k.name, f" ({k.id}): revoked"))

    run(go())


@keys.command("rotate")
def keys_rotate(
    ref: KeyRef, as_json: Json = False, url: Url = None, api_key: ApiKey = None
) -> None:
    """A new secret for a key (same name, role and expiry); the old one stops working."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            made = await client.rotate_key(ref)
        _print_key(made, as_json)

    run(go())


def _print_key(made: KeyCreated, as_json: bool) -> None:
    if as_json:
        _output.print_json(made)
        return
    _output.out.print(_output.line("key ", _output.styled(made.name, "bold"),
                                   f" ({made.id}, {made.role})"))  # fmt: skip
    _output.out.print(
        _output.line("API key (shown once): ", _output.styled(made.key, "bold")), soft_wrap=True
    )
    if made.expires_at:
        _output.err.print(f"expires {made.expires_at:%Y-%m-%d %H:%M} UTC", markup=False)


def token(
    expires: Annotated[
        str, typer.Option(help="How long it is valid: 15m, 2h, 1d at most.")
    ] = "15m",
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Exchange the API key for a short-lived API token (a JWT) and print it: give it to a
    script or a job as CORRAL_TOKEN (or --token-file) instead of the key itself."""
    seconds = _parse.span(expires, flag="--expires")

    async def go() -> None:
        async with connect(url, api_key) as client:
            issued = await client.token(seconds)
        if as_json:
            _output.print_json(issued)
            return
        _output.out.print(issued.access_token, markup=False, highlight=False, soft_wrap=True)
        _output.err.print(f"expires {issued.expires_at:%Y-%m-%d %H:%M:%S} UTC", markup=False)

    run(go())


def audit(
    since: Annotated[
        str | None, typer.Option(help="From this long ago (30m, 2h, 7d) or an ISO 8601 time.")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor (a key or worker id).")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this kind (key.created), or a prefix: key.*")
    ] = None,
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Who did what, when, from where, and what was refused (admin: the tenant's entries;
    operator: every tenant's). Oldest first."""
    when = _since(since)

    async def go() -> None:
        async with connect(url, api_key) as client:
            found = [e async for e in client.audit(since=when, actor=actor, action=action)]
        if as_json:
            _output.print_json(EventList(events=found))
            return
        rows = [(_output.clock(e.at), e.kind, e.actor or "-", e.source or "-",
                 e.tenant_id or "-", _timeline.summary(e, {})) for e in found]  # fmt: skip
        cols = ("TIME", "ACTION", "ACTOR", "SOURCE", "TENANT", "WHAT")
        _output.out.print(_output.table(None, cols, rows))

    run(go())


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    if text[-1:].isalpha() and text[:-1].strip().isdigit():
        return datetime.now(UTC) - timedelta(seconds=_parse.span(text, flag="--since"))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"expected 30m, 2h, 7d or an ISO 8601 time, got {text!r}", param_hint="--since"
        ) from None
    return when if when.tzinfo else when.astimezone()
