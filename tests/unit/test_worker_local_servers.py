"""The worker's /metrics, /health and page, in process: the loss read from its jobs' output,
what the registry exposes, and who the page answers (its Host, Origin and CSRF rules)."""

from __future__ import annotations

import math
import os

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from corral.sdk import METRIC_PREFIX
from corral.worker.monitor import LocalServer, LocalView, Monitor, RunningView, bare_url, last_loss
from corral.worker.ui import CSRF_HEADER, LogTail, Page


def view(**kw: object) -> LocalView:
    base: dict[str, object] = {
        "name": "w",
        "worker_id": "w_1",
        "status": "idle",
        "connected": True,
        "coordinator_url": "http://c:8001",
    }
    return LocalView(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "loss"),
    [
        (b"epoch 1\nno metrics here\n", None),
        (b'corral.metric {"step": 1, "loss": 0.5}\n', 0.5),
        (b'corral.metric {"loss": 2}\ncorral.metric {"loss": 0.25}\n', 0.25),
        (b'corral.metric {"loss": 1.5}\ncorral.metric {"acc": 0.9}\n', 1.5),  # no loss: kept
        (b'corral.metric {"loss": null}\n', math.nan),  # the SDK's word for a diverged one
        (b'corral.metric {"loss": true}\n', None),
        (b'corral.metric {"loss": "low"}\n', None),
        (b"corral.metric {not json\n", None),
        (b"corral.metric [1, 2]\n", None),
        (b'  corral.metric {"loss": 3}\n', None),  # the SDK writes it at a line's start
        (b'say corral.metric {"loss": 3}\n', None),
    ],
)
def test_the_last_loss_of_a_batch(data: bytes, loss: float | None) -> None:
    got = last_loss(data)
    if loss is None or not math.isnan(loss):
        assert got == loss
    else:
        assert got is not None and math.isnan(got)


def test_the_prefix_is_the_sdks() -> None:
    assert METRIC_PREFIX == "corral.metric "


def test_the_registry_holds_only_the_documented_families_with_their_values() -> None:
    m = Monitor(lambda: view(running=[RunningView("job_1", 1, "train", 1.0, os.getpid())]))
    m.ended("succeeded", 3.0)
    m.ended("failed", 0.2)
    m.ended("stopped", None)  # never ran a process: counted, not timed
    m.output(b'corral.metric {"step": 3, "loss": 0.125}\n')
    found = {
        f.name: f for f in text_string_to_metric_families(generate_latest(m.registry).decode())
    }
    assert set(found) == {
        "worker_task_duration_seconds",
        "worker_tasks_completed",
        "worker_training_loss",
        "worker_cpu_usage_percent",
        "worker_memory_usage_bytes",
        "worker_concurrent_tasks",
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in found.values()
        for s in f.samples
    }
    assert samples[("worker_tasks_completed_total", (("status", "succeeded"),))] == 1
    assert samples[("worker_tasks_completed_total", (("status", "stopped"),))] == 1
    assert samples[("worker_tasks_completed_total", (("status", "lost"),))] == 0
    assert samples[("worker_task_duration_seconds_count", ())] == 2
    assert samples[("worker_task_duration_seconds_sum", ())] == pytest.approx(3.2)
    assert samples[("worker_task_duration_seconds_bucket", (("le", "1"),))] == 1
    assert samples[("worker_task_duration_seconds_bucket", (("le", "5"),))] == 2
    assert samples[("worker_training_loss", ())] == 0.125
    assert samples[("worker_concurrent_tasks", ())] == 1
    # This process is a running attempt's too here: counted once.
    assert samples[("worker_memory_usage_bytes", ())] < 2 * _rss()
    health = m.health(m.take())
    assert (health["completed_tasks"], health["active_tasks"]) == (3, 1)
    assert health["last_heartbeat"] is None and health["last_heartbeat_age_s"] is None


def _rss() -> int:
    import psutil

    me = psutil.Process()
    return int(sum(p.memory_info().rss for p in [me, *me.children(recursive=True)]))


def test_a_url_loses_its_userinfo() -> None:
    assert (
        bare_url("https://user:pw@coord.example.com:8443/x?q=1")
        == "https://coord.example.com:8443/x"
    )
    assert bare_url("http://[::1]:8001") == "http://[::1]:8001"


def test_the_log_tail_numbers_its_lines_and_forgets_the_oldest() -> None:
    import logging

    tail = LogTail(size=3)
    for i in range(5):
        tail.emit(logging.LogRecord("t", logging.INFO, __file__, 1, f"line {i}", None, None))
    nxt, lines = tail.since(0)
    assert nxt == 5 and len(lines) == 3
    assert "line 2" in lines[0] and "line 4" in lines[-1]
    assert tail.since(5) == (5, [])


async def _no_pause(paused: bool) -> bool:
    raise AssertionError("a refused request reached the coordinator")


def client(page: Page, base: str = "http://127.0.0.1:5000") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=page.app()), base_url=base)


async def test_the_page_answers_only_to_its_own_names_and_port() -> None:
    page = Page(view, _no_pause, LogTail(), bind_host="127.0.0.1")
    async with client(page) as c:
        for host in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000"):
            assert (await c.get("/api/state", headers={"Host": host})).status_code == 200, host
        for host in ("evil.example:5000", "127.0.0.1:5001", "", "127.0.0.1:x"):
            r = await c.get("/api/state", headers={"Host": host})
            assert r.status_code == 403 and r.json()["error"] == "foreign_host", host


async def test_bound_everywhere_any_name_but_the_origin_must_match_it() -> None:
    said: list[bool] = []

    async def pause(paused: bool) -> bool:
        said.append(paused)
        return paused

    page = Page(view, pause, LogTail(), bind_host="0.0.0.0")
    async with client(page, "http://box.lan:5000") as c:
        ok = {CSRF_HEADER: page.csrf, "Origin": "http://box.lan:5000"}
        assert (await c.post("/pause", headers=ok)).json() == {"paused": True}
        other = {CSRF_HEADER: page.csrf, "Origin": "http://other.lan:5000"}
        assert (await c.post("/pause", headers=other)).status_code == 403
        no_origin = {CSRF_HEADER: page.csrf, "Referer": "http://box.lan:5000/"}
        assert (await c.post("/resume", headers=no_origin)).json() == {"paused": False}
    assert said == [True, False]


async def test_a_post_needs_the_token_and_a_small_form() -> None:
    page = Page(view, _no_pause, LogTail(), bind_host="127.0.0.1")
    async with client(page) as c:
        assert (await c.post("/pause")).json()["error"] == "csrf"
        assert (await c.post("/pause", data={"csrf_token": page.csrf[:-1]})).status_code == 403
        assert (
            await c.post(
                "/pause",
                content=b"csrf_token=" + b"a" * 5000,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        ).status_code == 413
        assert (await c.get("/pause")).status_code == 405
        assert (await c.get("/nothing")).json() == {"error": "Not Found"}


async def test_the_page_escapes_what_it_shows() -> None:
    sly = view(name="<script>x</script>", running=[RunningView("job_<b>", 1, "<i>", None, None)])
    page = Page(lambda: sly, _no_pause, LogTail(), bind_host="127.0.0.1")
    async with client(page) as c:
        html = (await c.get("/")).text
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html
    assert "job_&lt;b&gt;" in html and "<i>" not in html


async def test_a_local_server_binds_first_and_stops() -> None:
    m = Monitor(view)
    server = LocalServer(m.app(), "127.0.0.1", 0, what="metrics")
    server.bind()
    assert server.port
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as c:
            assert (await c.get("/health")).json()["worker_id"] == "w_1"
    finally:
        await server.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=server.url) as c:
            await c.get("/health")
