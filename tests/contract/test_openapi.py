"""Every route, fed what its OpenAPI schema allows and what it does not, by an operator with
a worker's token and by another tenant's viewer: never a 5xx, and every answer what the
document says it is (its status, its content type, its schema: errors are problem+json)."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from harness import fresh_database, start_coordinator
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp: Path = tmp_path_factory.mktemp("contract")
    with fresh_database(request.param, tmp) as url:
        coord, stop = start_coordinator(tmp / "server", url)
        with coord.client() as c:
            token = c.post("/api/admin/workers", json={"name": "probe"}).json()["token"]
            c.post("/api/queue/submit", json={"command": ["true"]})
        try:
            yield coord, token
        finally:
            stop()


CONFORMS = [response_schema_conformance, status_code_conformance, content_type_conformance]


def identities(coord, token):
    """An operator with a worker's token beside it, and another tenant's viewer."""
    with coord.client() as op:
        other = op.post("/api/admin/tenants", json={"name": "other"}).json()
    with coord.client(other["api_key"]) as admin:
        viewer = admin.post("/api/admin/keys", json={"name": "v", "role": "viewer"}).json()
    return {
        "operator": ({"Authorization": f"Bearer {coord.admin_key}", "X-Worker-Token": token}, 25),
        "another tenant's viewer": ({"Authorization": f"Bearer {viewer['key']}"}, 8),
    }


def test_no_server_errors_and_every_answer_as_documented(live):
    coord, token = live
    schema = schemathesis.openapi.from_url(coord.url + "/openapi.json")
    checked = 0
    for name, (headers, examples) in identities(coord, token).items():
        for result in schema.get_all_operations():
            op = result.ok()
            if op.path == "/api/workers/stream":
                continue  # the worker's event stream never ends by design; it has its own tests
            attack(op, name, headers, examples)
            checked += 1
    assert checked >= 60


def attack(op, name, headers, examples):
    @given(case=op.as_strategy())
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)  # fmt: skip
    def probe(case):
        response = case.call(headers=headers, timeout=10)
        assert response.status_code < 500, (name, case.method, case.path, response.text[:300])
        case.validate_response(response, checks=CONFORMS, headers=headers)

    probe()
