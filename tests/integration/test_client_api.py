"""corral.client against a real coordinator on a loopback port; a worker played by hand."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from faultproxy import FaultProxy
from harness import Coordinator, start_coordinator
from harness_e2e import free_port
from wire import next_event, register_worker

from corral.cli._logging import Level, configure
from corral.client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidInput,
    NotFound,
    Unauthenticated,
    Unreachable,
)
from corral.client import _async as client_module


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    configure(Level.ERROR, stream=sys.__stderr__)
    # The client does not care which store is behind the API; SQLite keeps this fast.
    c, stop = start_coordinator(tmp_path / "server", f"sqlite:///{tmp_path / 'c.db'}")
    try:
        yield c
    finally:
        stop()
        structlog.reset_defaults()


def _client(coord: Coordinator) -> AsyncClient:
    return AsyncClient(coord.url, coord.admin_key)


async def test_submit_is_typed_and_safe_to_repeat(coord: Coordinator) -> None:
    async with _client(coord) as client:
        job = await client.submit(
            ["python", "-c", "print(1)"], name="one", env={"A": "1"}, labels={"gpu": "a*"},
            gpus=0, priority=7, retries=1, timeout=30, idempotency_key="sweep-1",
        )  # fmt: skip
        assert (job.name, job.state, job.priority) == ("one", "queued", 7)
        assert (job.worker_labels, job.max_retries, job.timeout_s) == ({"gpu": "a*"}, 1, 30)
        again = await client.submit(["python", "-c", "print(1)"], name="one", env={"A": "1"},
                                    labels={"gpu": "a*"}, priority=7, retries=1, timeout=30,
                                    idempotency_key="sweep-1")  # fmt: skip
        assert again.id == job.id  # the key made the repeat return the first job
        other = await client.submit(["true"])  # a fresh key each time: a new job
        assert other.id != job.id
        assert (await client.job(job.id)).attempts == []
        assert (await client.result(job.id))["state"] == "queued"
        cancelled = await client.cancel(other.id)
        assert cancelled.state == "cancelled"


async def test_jobs_iterates_every_page_and_limit_caps_it(
    coord: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)  # several pages from five jobs
    async with _client(coord) as client:
        ids = [(await client.submit(["true"], name=f"j{i}")).id for i in range(5)]
        await client.cancel(ids[0])
        assert [j.id async for j in client.jobs()] == ids[::-1]  # newest first
        assert [j.id async for j in client.jobs(limit=3)] == ids[:1:-1]
        assert [j.id async for j in client.jobs(limit=0)] == []
        queued = [j.id async for j in client.jobs(state="queued")]
        assert queued == ids[:0:-1]
        both = [j.id async for j in client.jobs(state=["queued", "cancelled"], limit=10)]
        assert both == ids[::-1]


async def test_logs_read_and_followed_line_by_line_across_attempts(coord: Coordinator) -> None:
    _, wc = register_worker(coord)
    async with _client(coord) as client:
        job = await client.submit(["x"], retries=1)

        def run_two_attempts() -> None:
            ev = next_event(wc)
            path = f"/api/workers/job/{job.id}"
            wc.post(f"{path}/status", json={"attempt": 1, "status": "running"})
            wc.post(f"{path}/logs", json={"attempt": 1, "seq": 0, "data": "one\ntw"})
            wc.post(f"{path}/logs", json={"attempt": 1, "seq": 1, "data": "o\npart"})
            wc.post(f"{path}/status", json={"attempt": 1, "status": "timed_out"})
            ev = next_event(wc, ev["id"])
            assert ev["data"]["attempt"] == 2
            wc.post(f"{path}/status", json={"attempt": 2, "status": "running"})
            wc.post(f"{path}/logs", json={"attempt": 2, "seq": 0, "data": "again\n"})
            wc.post(f"{path}/status", json={"attempt": 2, "status": "succeeded", "exit_code": 0})

        worker = asyncio.create_task(asyncio.to_thread(run_two_attempts))
        followed = [line async for line in client.logs(job.id, follow=True)]
        await worker
        expected = ["one", "two", "part", "--- attempt 2 ---", "again"]
        assert followed == expected
        assert [line async for line in client.logs(job.id)] == expected
        assert (await client.job(job.id)).state == "succeeded"


async def test_a_followed_log_resumes_after_the_link_is_cut(coord: Coordinator) -> None:
    _, wc = register_worker(coord)
    proxy = FaultProxy("127.0.0.1", int(coord.url.rsplit(":", 1)[1])).start()
    try:
        async with AsyncClient(proxy.url, coord.admin_key) as client:
            job = await client.submit(["x"])
            path = f"/api/workers/job/{job.id}"
            next_event(wc)
            wc.post(f"{path}/status", json={"attempt": 1, "status": "running"})
            wc.post(f"{path}/logs", json={"attempt": 1, "seq": 0, "data": "one\ntw"})
            lines = client.logs(job.id, follow=True)
            assert await anext(lines) == "one"
            proxy.cut()  # the open stream dies; new connections are refused for a while
            wc.post(f"{path}/logs", json={"attempt": 1, "seq": 1, "data": "o\nthree\n"})
            await asyncio.sleep(0.3)  # let the client fail a reconnect or two
            proxy.restore()
            wc.post(f"{path}/status", json={"attempt": 1, "status": "succeeded", "exit_code": 0})
            rest = [line async for line in lines]
        assert rest == ["two", "three"]  # nothing repeated, nothing missed
    finally:
        proxy.stop()


async def test_a_follow_gives_up_when_no_coordinator_answers(coord: Coordinator) -> None:
    _, wc = register_worker(coord)
    proxy = FaultProxy("127.0.0.1", int(coord.url.rsplit(":", 1)[1])).start()
    try:
        async with AsyncClient(proxy.url, coord.admin_key, retry_timeout=0.5) as client:
            job = await client.submit(["x"])
            lines = client.logs(job.id, follow=True)
            next_event(wc)
            wc.post(f"/api/workers/job/{job.id}/logs", json={"attempt": 1, "seq": 0,
                                                             "data": "hi\n"})  # fmt: skip
            assert await anext(lines) == "hi"
            proxy.cut()
            with pytest.raises(Unreachable):
                await asyncio.wait_for(anext(lines), 30)
    finally:
        proxy.stop()


async def test_workers_by_id_or_name(coord: Coordinator) -> None:
    async with _client(coord) as client:
        created = await client.create_worker("box-1", persistent=True, labels={"gpu": "a100"})
        assert created.token and created.name == "box-1"
        by_name, by_id = await client.worker("box-1"), await client.worker(created.id)
        assert by_name == by_id and by_name.labels == {"gpu": "a100"}
        assert [w.name for w in await client.workers()] == ["box-1"]
        rotated = await client.rotate_token("box-1")
        assert rotated.id == created.id and rotated.token != created.token
        headers = {"X-Worker-Token": rotated.token}
        async with httpx.AsyncClient(base_url=coord.url, headers=headers) as wc:
            r = await wc.post("/api/workers/register", json={"slots": 1, "persistent": True})
            assert r.status_code == 200, r.text
            assert (await client.drain_worker("box-1")).status == "draining"
            with pytest.raises(Conflict):  # not offline yet
                await client.remove_worker(created.id)
            assert (await wc.post("/api/workers/disconnect")).status_code == 204
        removed = await client.remove_worker("box-1")
        assert removed.id == created.id
        with pytest.raises(NotFound):
            await client.worker("box-1")


async def test_errors_are_the_typed_ones(coord: Coordinator) -> None:
    async with _client(coord) as client:
        with pytest.raises(NotFound) as missing:
            await client.job("job_nope")
        assert missing.value.status == 404 and missing.value.code == "not_found"
        with pytest.raises(InvalidInput):
            [j async for j in client.jobs(state="bogus")]
    async with AsyncClient(coord.url, "ck_wrong") as stranger:
        with pytest.raises(Unauthenticated):
            await stranger.job("job_nope")
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", attempts=2) as nobody:
        with pytest.raises(Unreachable):
            await nobody.job("job_nope")
        assert await nobody.healthy() is False


async def test_a_dead_coordinator_in_the_list_is_skipped(coord: Coordinator) -> None:
    urls = f"http://127.0.0.1:{free_port()},{coord.url}"
    async with AsyncClient(urls, coord.admin_key) as client:
        assert await client.healthy()
        assert (await client.submit(["true"])).state == "queued"


async def test_the_blocking_client_works_inside_a_running_event_loop(
    coord: Coordinator,
) -> None:
    # As in a Jupyter cell: this test's own loop is running in this thread, where a client
    # built on asyncio.run() would fail with "cannot be called from a running event loop".
    asyncio.get_running_loop()
    with Client(coord.url, coord.admin_key) as client:
        job = client.submit(["true"], name="from-a-notebook")
        assert client.job(job.id).name == "from-a-notebook"
        assert [j.id for j in client.jobs()] == [job.id]
        assert client.healthy()
        with pytest.raises(NotFound):
            client.job("job_nope")
        created = client.create_worker("nb", persistent=True)
        assert client.worker("nb").id == created.id


def test_the_blocking_client_iterates_and_stops_early(
    coord: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "PAGE_SIZE", 1)
    with Client(coord.url, coord.admin_key) as client:
        ids = [client.submit(["true"]).id for _ in range(3)]
        jobs = client.jobs()
        assert next(jobs).id == ids[-1]
        jobs.close()  # closes the async iterator on the client's loop
        assert [j.id for j in client.jobs(limit=2)] == ids[:0:-1]
        # Several threads may share one client.
        seen: list[str] = []
        threads = [threading.Thread(target=lambda: seen.append(client.job(ids[0]).id))
                   for _ in range(4)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert seen == [ids[0]] * 4
