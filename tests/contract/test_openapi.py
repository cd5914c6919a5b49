"""Every route, fed what its OpenAPI schema allows and what it does not: never a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from harness import fresh_database, start_coordinator
from hypothesis import HealthCheck, given, settings


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


def test_no_server_errors(live):
    coord, token = live
    headers = {"Authorization": f"Bearer {coord.admin_key}", "X-Worker-Token": token}
    schema = schemathesis.openapi.from_url(coord.url + "/openapi.json")
    checked = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/api/workers/stream":
            continue  # the worker's event stream never ends by design; it has its own tests

        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)  # fmt: skip
        def probe(case):
            response = case.call(headers=headers, timeout=10)
            assert response.status_code < 500, (case.method, case.path, response.text[:300])

        probe()
        checked += 1
    assert checked >= 15
