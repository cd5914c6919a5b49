"""A worker's own /metrics, /health and page (docs/monitoring.md), with real coordinator and
worker processes: what its jobs did, scraped from it, and its Pause taking effect on the
coordinator. Its GPUs come from the stand-in NVML (tests/fakes/pynvml.py)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from harness_e2e import free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families

PY = sys.executable
FAKES = Path(__file__).resolve().parent.parent / "fakes"
GPUS = [
    {"name": "NVIDIA A100", "memory_gb": 80, "uuid": "GPU-a", "util": 35},
    {"name": "NVIDIA A10", "memory_gb": 24, "uuid": "GPU-b"},
]
# Each name docs/monitoring.md lists, with its labels.
DOCUMENTED = {
    "worker_task_duration_seconds": ("histogram", set()),
    "worker_tasks_completed_total": ("counter", {"status"}),
    "worker_training_loss": ("gauge", set()),
    "worker_cpu_usage_percent": ("gauge", set()),
    "worker_memory_usage_bytes": ("gauge", set()),
    "worker_concurrent_tasks": ("gauge", set()),
    "worker_gpu_utilization_percent": ("gauge", {"gpu"}),
    "worker_gpu_memory_used_bytes": ("gauge", {"gpu"}),
    "worker_gpu_memory_total_bytes": ("gauge", {"gpu"}),
}
METRIC_LINE = 'corral.metric {"step": 1, "loss": 0.5}'


def with_gpus() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(FAKES), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "CORRAL_FAKE_NVML": json.dumps(GPUS)}


def scrape(url: str) -> dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]:
    """name -> (type, {labels: value}); the name as exposed (a counter's with ``_total``)."""
    text = httpx.get(f"{url}/metrics", timeout=5).raise_for_status().text
    found = {}
    for fam in text_string_to_metric_families(text):
        name = f"{fam.name}_total" if fam.type == "counter" else fam.name
        samples = {
            (s.name.removeprefix(name) or "", *sorted(s.labels.items())): s.value
            for s in fam.samples
        }
        found[name] = (fam.type, samples)
    return found


def value(metrics, name: str, **labels: str) -> float | None:
    key = ("", *sorted(labels.items()))
    return metrics.get(name, ("", {}))[1].get(key)


def label_names(samples) -> set[str]:
    return {k for key in samples for k, _ in key[1:]} - {"le"}


def waits_for(flag: Path) -> list[str]:
    return [PY, "-c", f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)"]


def test_metrics_and_health_follow_what_its_jobs_did(fleet, tmp_path):
    fleet.start_server()
    port = free_port()
    worker = fleet.start_worker("m", CORRAL_WORKER__METRICS_PORT=str(port), **with_gpus())
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: fleet.workers().get("m", {}).get("status") == "idle", what="idle")
    first = wait_until(lambda: _try(scrape, url), what="/metrics")
    for name, (kind, samples) in first.items():
        assert name in DOCUMENTED, f"{name} is not in docs/monitoring.md"
        assert (kind, label_names(samples)) == DOCUMENTED[name], name
    assert set(DOCUMENTED) - set(first) == {"worker_training_loss"}  # no job reported one yet
    assert value(first, "worker_concurrent_tasks") == 0
    assert value(first, "worker_tasks_completed_total", status="succeeded") == 0
    assert value(first, "worker_gpu_memory_total_bytes", gpu="0") == 80 * 2**30
    assert value(first, "worker_gpu_memory_total_bytes", gpu="1") == 24 * 2**30
    assert value(first, "worker_gpu_utilization_percent", gpu="0") == 35
    assert value(first, "worker_gpu_utilization_percent", gpu="1") is None  # NVML: not supported
    assert value(first, "worker_memory_usage_bytes") > 10 * 2**20  # a Python process at least

    flag = tmp_path / "go"
    long = fleet.submit(waits_for(flag))
    fleet.wait_state(long["id"], {"running"})
    busy = wait_until(
        lambda: (m := scrape(url)) and value(m, "worker_concurrent_tasks") == 1 and m,
        what="one task running",
    )
    assert value(busy, "worker_tasks_completed_total", status="succeeded") == 0
    health = httpx.get(f"{url}/health", timeout=5).json()
    assert (health["status"], health["active_tasks"]) == ("busy", 1)
    flag.touch()
    fleet.wait_state(long["id"], {"succeeded"})

    ok = fleet.submit([PY, "-c", f"print({METRIC_LINE!r})"])
    assert fleet.wait_state(ok["id"], {"succeeded", "failed"})["state"] == "succeeded"
    bad = fleet.submit([PY, "-c", "import sys; sys.exit(3)"])
    assert fleet.wait_state(bad["id"], {"succeeded", "failed"})["state"] == "failed"

    def ended() -> dict | None:
        m = scrape(url)
        done = value(m, "worker_tasks_completed_total", status="failed") == 1
        return (
            m
            if done and value(m, "worker_tasks_completed_total", status="succeeded") == 2
            else None
        )

    after = wait_until(ended, what="the ends counted")
    assert value(after, "worker_training_loss") == 0.5
    assert value(after, "worker_concurrent_tasks") == 0
    assert value(after, "worker_tasks_completed_total", status="cancelled") == 0
    _, hist = after["worker_task_duration_seconds"]
    assert hist[("_count",)] == 3 and hist[("_bucket", ("le", "+Inf"))] == 3
    assert hist[("_sum",)] > 0
    assert set(after) == set(DOCUMENTED)

    beaten = lambda: (r := httpx.get(f"{url}/health", timeout=5)).json()["last_heartbeat"] and r  # noqa: E731
    health = wait_until(beaten, what="a heartbeat answered")  # one a second here
    assert health.headers["content-type"] == "application/json"
    h = health.json()
    me = fleet.workers()["m"]
    assert set(h) == {
        "worker_id",
        "name",
        "status",
        "uptime",
        "uptime_s",
        "active_tasks",
        "completed_tasks",
        "cpu_usage",
        "memory_usage",
        "last_heartbeat",
        "last_heartbeat_age_s",
        "coordinator_connection",
        "coordinator_url",
    }
    assert (h["worker_id"], h["name"], h["status"]) == (me["id"], "m", "idle")
    assert (h["active_tasks"], h["completed_tasks"]) == (0, 3)
    assert (h["coordinator_connection"], h["coordinator_url"]) == ("connected", fleet.url)
    assert h["uptime"].endswith("s") and h["uptime_s"] > 0
    assert 0 <= h["cpu_usage"] <= 100 and h["memory_usage"] > 10 * 2**20
    assert 0 <= h["last_heartbeat_age_s"] < 10  # it beats every second here
    assert datetime.fromisoformat(h["last_heartbeat"]).tzinfo is not None
    assert worker.token not in health.text

    assert httpx.get(f"{url}/nope", timeout=5).status_code == 404
    wrong = httpx.post(f"{url}/metrics", timeout=5)
    assert wrong.status_code == 405 and wrong.json()["error"]


def test_a_metrics_port_in_use_that_was_asked_for_stops_the_worker(fleet):
    fleet.start_server()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = fleet.start_worker("p", CORRAL_WORKER__METRICS_PORT=str(port))
        assert worker.wait(30) == 2
    assert "worker.cannot_listen" in worker.output()


def _try(call, *args):
    try:
        return call(*args)
    except httpx.HTTPError:
        return None


class Page:
    """The worker's page over HTTP, as a browser on this machine would speak to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)

    def csrf(self) -> str:
        html = self.http.get("/").text
        marker = '<meta name="csrf-token" content="'
        return html.split(marker, 1)[1].split('"', 1)[0]

    def post(self, path: str, **kw) -> httpx.Response:
        return self.http.post(path, **kw)

    def state(self) -> dict:
        return self.http.get("/api/state").json()


def test_page_shows_the_worker_and_its_pause_takes_effect_on_the_coordinator(fleet):
    fleet.start_server()
    port = free_port()
    worker = fleet.start_worker("u", CORRAL_WORKER__UI="true", CORRAL_WORKER__UI_PORT=str(port))
    page = Page(f"http://127.0.0.1:{port}")
    wait_until(lambda: (_try(page.state) or {}).get("status") == "idle", what="the page: idle")
    me = fleet.workers()["u"]
    html = page.http.get("/")
    assert html.status_code == 200 and html.headers["x-frame-options"] == "DENY"
    assert me["id"] in html.text and ">idle<" in html.text and fleet.url in html.text
    assert worker.token not in html.text
    assert page.http.get("/static/ui.js").status_code == 200
    state = page.state()
    assert (state["worker_id"], state["connected"], state["paused"]) == (me["id"], True, False)
    assert worker.token not in json.dumps(state)
    logs = page.http.get("/api/logs", params={"after": 0}).json()
    assert any("worker.registered" in line for line in logs["lines"])
    assert all(worker.token not in line for line in logs["lines"])
    assert page.http.get("/api/logs", params={"after": "x"}).status_code == 400

    token = page.csrf()
    own = page.url
    refused = [
        page.post("/pause"),  # no token
        page.post("/pause", headers={"X-CSRF-Token": "0" * 43}),  # a wrong one
        page.post("/pause", headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}),
        page.post("/pause", headers={"X-CSRF-Token": token, "Referer": "http://evil.example/x"}),
        page.post(
            "/pause", headers={"X-CSRF-Token": token, "Origin": own, "Host": f"evil.example:{port}"}
        ),  # rebinding
        page.post("/pause", data={"csrf_token": "nope"}),  # a form with a wrong token
    ]
    for r in refused:
        assert r.status_code == 403 and r.json()["error"], r.text
    assert page.http.get("/", headers={"Host": f"evil.example:{port}"}).status_code == 403
    assert fleet.workers()["u"]["paused"] is False  # none of them reached the coordinator

    r = page.post("/pause", headers={"X-CSRF-Token": token, "Origin": own})
    assert r.status_code == 200 and r.json() == {"paused": True}
    seen = fleet.workers()["u"]
    assert (seen["paused"], seen["status"]) == (True, "paused")
    assert page.state()["status"] == "paused"
    job = fleet.submit([PY, "-c", "print('ran')"])
    deadline = time.monotonic() + 2.0  # dispatch rounds come many a second: none takes it
    while time.monotonic() < deadline:
        assert fleet.job(job["id"])["state"] == "queued"
        time.sleep(0.1)

    # Resume as the form does without JavaScript: the token in a field, then back to the page.
    r = page.post("/resume", data={"csrf_token": token}, headers={"Origin": own})
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert fleet.wait_state(job["id"], {"succeeded", "failed"})["state"] == "succeeded"
    assert fleet.workers()["u"]["paused"] is False
    assert page.state()["paused"] is False
    page.http.close()


@pytest.mark.parametrize("path", ["/pause", "/resume"])
def test_page_refuses_a_cross_origin_form_even_with_a_token(fleet, path):
    fleet.start_server()
    port = free_port()
    fleet.start_worker("x", CORRAL_WORKER__UI="true", CORRAL_WORKER__UI_PORT=str(port))
    page = Page(f"http://127.0.0.1:{port}")
    wait_until(lambda: _try(page.state), what="the page")
    r = page.post(path, data={"csrf_token": page.csrf()}, headers={"Origin": "null"})
    assert r.status_code == 403 and r.json()["error"] == "cross_origin"
    page.http.close()
