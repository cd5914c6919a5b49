"""The coordinator's ``GET /metrics`` scraped while real jobs run, fail, retry and a real
worker leaves: each value moves as the history says it should, and the names and label
sets are exactly those docs/monitoring.md lists."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import httpx
from harness_e2e import ADMIN_KEY, Fleet, wait_until
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TOKEN = "scrape-" + "x" * 40
DOC = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"
PY = sys.executable


def documented(prefix: str) -> dict[str, set[str]]:
    """name -> its labels, from the tables of docs/monitoring.md."""
    out: dict[str, set[str]] = {}
    for line in DOC.read_text().splitlines():
        m = re.match(rf"\| `({prefix}\w+)` \|[^|]+\|([^|]*)\|", line)
        if m:
            out[m[1]] = set(re.findall(r"`(\w+)`", m[2]))
    return out


def scrape(fleet: Fleet, token: str = SCRAPE_TOKEN) -> dict[str, Any]:
    r = httpx.get(fleet.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(families: dict[str, Any], sample: str, **labels: str) -> float:
    for fam in families.values():
        for s in fam.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_metrics_move_as_jobs_run_fail_retry_and_a_worker_leaves(fleet: Fleet) -> None:
    fleet.start_server(CORRAL_SERVER__METRICS_TOKEN=SCRAPE_TOKEN)
    # Who may scrape: the token, an operator's key; nobody else.
    assert httpx.get(fleet.url + "/metrics").status_code == 401
    bad = httpx.get(fleet.url + "/metrics", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["title"] == "unauthenticated"
    scrape(fleet, ADMIN_KEY)

    before = scrape(fleet)
    assert value(before, "corral_build_info") == 1
    worker = fleet.start_worker("w1", slots=2, heartbeat=0.5)
    wait_until(lambda: fleet.workers()["w1"]["status"] == "idle", 30, "w1 to be idle")

    ok = fleet.submit(["true"])
    bad_job = fleet.submit([PY, "-c", "import sys; sys.exit(3)"], max_retries=1)  # final
    slow = fleet.submit(["sleep", "30"], max_retries=1, timeout_s=1)  # retried once
    fleet.wait_state(ok["id"], {"succeeded"})
    fleet.wait_state(bad_job["id"], {"failed"})
    fleet.wait_state(slow["id"], {"failed"})
    fleet.submit(["true"], worker_labels={"pool": "nowhere"})  # stays queued
    fleet.job(ok["id"])  # a route with an id in its path, for the HTTP histogram below

    m = scrape(fleet)
    assert value(m, "corral_jobs_submitted_total") == 4
    assert value(m, "corral_attempts_ended_total", outcome="succeeded") == 1
    assert value(m, "corral_attempts_ended_total", outcome="failed") == 1
    assert value(m, "corral_attempts_ended_total", outcome="timed_out") == 2
    assert value(m, "corral_jobs_retries_total") == 1
    assert value(m, "corral_changes_total", kind="job.requeued") == 1
    assert value(m, "corral_dispatch_latency_seconds_count") == 3  # first attempts only
    assert value(m, "corral_job_duration_seconds_count", outcome="timed_out") == 2
    assert value(m, "corral_job_duration_seconds_sum", outcome="timed_out") >= 1.5  # 1 s each
    assert value(m, "corral_job_duration_seconds_count", outcome="failed") == 1
    assert value(m, "corral_job_duration_seconds_count", outcome="succeeded") == 1
    assert value(m, "corral_jobs_in_state", state="succeeded") == 1
    assert value(m, "corral_jobs_in_state", state="failed") == 2
    assert value(m, "corral_jobs_in_state", state="queued") == 1
    (depth,) = m["corral_queue_depth_jobs"].samples  # the one tenant with a queue
    assert depth.value == 1 and depth.labels["tenant"]
    (age,) = m["corral_queue_oldest_age_seconds"].samples
    assert age.labels == depth.labels and age.value >= 0
    assert value(m, "corral_workers_in_status", status="idle") == 1
    assert value(m, "corral_workers_streams_open") == 1
    assert value(m, "corral_workers_heartbeats_total") >= 1
    assert value(m, "corral_db_transaction_duration_seconds_count") > 0
    routes = {s.labels["route"] for s in m["corral_http_request_duration_seconds"].samples}
    assert "/api/jobs/{job_id}" in routes and "/api/workers/heartbeat" in routes
    assert not any(ok["id"] in r for r in routes)  # never an id
    beats = value(m, "corral_workers_heartbeats_total")
    wait_until(lambda: value(scrape(fleet), "corral_workers_heartbeats_total") > beats, 15,
               "another heartbeat")  # fmt: skip

    # The names and label sets are the documented ones, no more, no fewer.
    listed = documented("corral_")
    seen: dict[str, set[str]] = {}
    for fam in m.values():
        for s in fam.samples:
            seen.setdefault(fam.name, set()).update(k for k in s.labels if k != "le")
    for name, labels in listed.items():
        base = name.removesuffix("_total")
        assert base in seen, f"{name} is documented but not served"
        assert seen[base] == labels, f"{name}: served labels {seen[base]}, documented {labels}"
    assert {n for n in seen} == {n.removesuffix("_total") for n in listed}

    # The worker leaves: offline, its stream closed, the change counted.
    assert worker.term() == 0
    wait_until(lambda: value(scrape(fleet), "corral_workers_in_status", status="offline") == 1,
               15, "the worker to be offline")  # fmt: skip
    m = scrape(fleet)
    assert value(m, "corral_workers_streams_open") == 0
    assert value(m, "corral_changes_total", kind="worker.offline") == 1
    assert value(m, "corral_workers_in_status", status="idle") == 0
