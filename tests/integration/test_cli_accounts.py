"""``corral onboard``, ``corral tenants``, ``corral keys`` and ``corral token`` against a
real coordinator: what scripts get with --json, and refusals as one line and exit 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from harness import Coordinator, start_coordinator
from typer.testing import CliRunner

from corral.cli._logging import Level, configure
from corral.cli.main import app

runner = CliRunner()


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    configure(Level.ERROR, stream=sys.__stderr__)
    c, stop = start_coordinator(tmp_path / "server", f"sqlite:///{tmp_path / 'c.db'}")
    try:
        yield c
    finally:
        stop()
        structlog.reset_defaults()


def cli(coord: Coordinator, *args: str, key: str | None = None, **env: str) -> Any:
    env = {"CORRAL_URL": coord.url, "CORRAL_API_KEY": key or coord.admin_key, **env}
    return runner.invoke(app, list(args), env=env)


def doc(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_onboard_then_the_tenants_admin_makes_lists_rotates_and_revokes_keys(coord):
    made = doc(cli(coord, "onboard", "My Company", "--json"))
    assert set(made) == {"tenant_id", "name", "key_id", "api_key"}
    people = cli(coord, "onboard", "Other Co")
    assert people.exit_code == 0 and "shown once" in people.stdout
    assert "corral workers create" in people.stderr and "CORRAL_WORKER__TOKEN" in people.stderr
    tenants = doc(cli(coord, "tenants", "ls", "--json"))["tenants"]
    assert {t["name"] for t in tenants} == {"default", "My Company", "Other Co"}

    admin = made["api_key"]
    ci = doc(cli(coord, "keys", "create", "ci", "--role", "viewer", "--expires", "30d",
                 "--json", key=admin))  # fmt: skip
    assert ci["role"] == "viewer" and ci["key"].startswith(ci["prefix"]) and ci["expires_at"]
    listing = cli(coord, "keys", "ls", key=admin)
    assert listing.exit_code == 0 and f"{ci['prefix']}…" in listing.stdout
    assert ci["key"] not in listing.stdout
    assert {k["name"] for k in doc(cli(coord, "keys", "ls", "--json", key=admin))["keys"]} == {
        "admin", "ci"}  # fmt: skip
    rotated = doc(cli(coord, "keys", "rotate", "ci", "--json", key=admin))
    assert rotated["id"] == ci["id"] and rotated["key"] != ci["key"]
    assert cli(coord, "jobs", "ls", key=ci["key"]).exit_code == 2  # the old secret is refused
    assert cli(coord, "jobs", "ls", key=rotated["key"]).exit_code == 0
    gone = cli(coord, "keys", "revoke", ci["id"], key=admin)
    assert gone.exit_code == 0 and "revoked" in gone.stdout
    refused = cli(coord, "jobs", "ls", key=rotated["key"])
    assert refused.exit_code == 2 and "invalid API key" in refused.stderr

    assert cli(coord, "tenants", "suspend", "My Company").exit_code == 0
    refused = cli(coord, "jobs", "ls", key=admin)
    assert refused.exit_code == 2 and "suspended" in refused.stderr
    assert "active" in cli(coord, "tenants", "resume", made["tenant_id"]).stdout
    assert cli(coord, "jobs", "ls", key=admin).exit_code == 0


def test_refusals_name_what_is_wrong_and_exit_2(coord):
    made = doc(cli(coord, "onboard", "Acme", "--json"))
    r = cli(coord, "onboard", "Acme")
    assert r.exit_code == 2 and "exists" in r.stderr
    r = cli(coord, "onboard", "Nope", key=made["api_key"])
    assert r.exit_code == 2 and "tenants.admin" in r.stderr
    r = cli(coord, "keys", "create", "x", "--role", "operator", key=made["api_key"])
    assert r.exit_code == 2 and "operator" in r.stderr
    r = cli(coord, "keys", "create", "x", "--expires", "soon")
    assert r.exit_code == 2 and "--expires" in r.stderr
    r = cli(coord, "keys", "create", "x", "--role", "boss")
    assert r.exit_code == 2
    r = cli(coord, "keys", "revoke", "nope")
    assert r.exit_code == 2 and "no API key" in r.stderr


def test_a_token_from_corral_token_works_by_flag_env_and_file(coord, tmp_path):
    issued = doc(cli(coord, "token", "--expires", "5m", "--json"))
    assert issued["expires_in_s"] == 300
    plain = cli(coord, "token")
    assert plain.exit_code == 0 and plain.stdout.strip().count(".") == 2
    token = issued["access_token"]
    # A token wins over a key: with a wrong key beside it, it still passes.
    assert cli(coord, "--token", token, "jobs", "ls", key="ck_wrong").exit_code == 0
    assert cli(coord, "jobs", "ls", key="ck_wrong", CORRAL_TOKEN=token).exit_code == 0
    path = tmp_path / "token"
    path.write_text(token + "\n")
    assert cli(coord, "--token-file", str(path), "jobs", "ls", key="ck_wrong").exit_code == 0
    r = cli(coord, "--token-file", str(tmp_path / "missing"), "jobs", "ls")
    assert r.exit_code == 2 and "cannot read" in r.stderr
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    r = cli(coord, "--token", forged, "jobs", "ls")
    assert r.exit_code == 2 and "invalid API token" in r.stderr


def test_audit_shows_who_did_what_from_where(coord):
    made = doc(cli(coord, "onboard", "Acme", "--json"))
    cli(coord, "keys", "create", "ci", key=made["api_key"])
    cli(coord, "jobs", "ls", key="ck_wrong")
    entries = doc(cli(coord, "audit", "--json", "--since", "1h"))["events"]
    kinds = [e["kind"] for e in entries]
    assert "tenant.onboarded" in kinds and "key.created" in kinds and "auth.refused" in kinds
    keys = doc(cli(coord, "audit", "--json", "--action", "key.*", "--actor", made["key_id"]))
    assert [e["detail"]["name"] for e in keys["events"]] == ["ci"]
    table = cli(coord, "audit", "--action", "auth.refused")
    assert table.exit_code == 0 and "127.0.0.1" in table.stdout
    r = cli(coord, "audit", "--since", "last week")
    assert r.exit_code == 2 and "--since" in r.stderr
    theirs = doc(cli(coord, "audit", "--json", key=made["api_key"]))["events"]
    assert theirs and {e["tenant_id"] for e in theirs} == {made["tenant_id"]}


def test_onboard_self_service_needs_no_key_where_allowed(tmp_path):
    configure(Level.ERROR, stream=sys.__stderr__)
    c, stop = start_coordinator(tmp_path / "s", f"sqlite:///{tmp_path / 's.db'}",
                                self_onboarding=True)  # fmt: skip
    try:
        env = {"CORRAL_URL": c.url, "CORRAL_API_KEY": ""}
        made = runner.invoke(app, ["onboard", "Walk-in", "--self-service", "--json"], env=env)
        assert made.exit_code == 0, made.output
        assert json.loads(made.stdout)["api_key"].startswith("ck_")
        refused = runner.invoke(app, ["onboard", "Other"], env=env)  # the operator's route
        assert refused.exit_code == 2 and "API key" in refused.stderr
    finally:
        stop()
        structlog.reset_defaults()
