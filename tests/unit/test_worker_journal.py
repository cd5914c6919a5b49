"""The local journal and the outbox: what must survive a worker restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from corral.model import JobState
from corral.model.errors import CorralError, Unreachable
from corral.protocol import AttemptReport, Problem, ReportAck, ReportOutcome, WorkerReport
from corral.protocol.errors import from_problem
from corral.worker.client import TokenRefused
from corral.worker.journal import AttemptRecord, Journal, JournalBusy
from corral.worker.outbox import Outbox


def _rec(job_id: str = "j_1", attempt: int = 1) -> AttemptRecord:
    return AttemptRecord(
        job_id=job_id,
        attempt=attempt,
        pid=4242,
        pgid=4242,
        create_time=123.5,
        workdir=Path("/tmp/x"),
        started_at=time.time(),
        timeout_s=60.0,
        gpus=[1],
    )


def test_attempts_and_reports_survive_reopen(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.record_started(_rec("j_1"))
    journal.record_started(_rec("j_2"))
    journal.set_log_position("j_1", 1, seq=4, offset=100, end=180)
    journal.finish("j_2", 1, AttemptReport(attempt=1, status="succeeded", result={"a": 1}))
    journal.close()

    journal = Journal(tmp_path)
    [rec] = journal.attempts()
    assert (rec.job_id, rec.gpus, rec.timeout_s) == ("j_1", [1], 60.0)
    assert (rec.log_seq, rec.log_offset, rec.log_end) == (4, 100, 180)
    [pending] = journal.pending_reports()
    assert pending.job_id == "j_2" and pending.report.result == {"a": 1}
    assert journal.has_report("j_2", 1) and not journal.has_report("j_1", 1)
    journal.report_done("j_2", 1)
    journal.forget("j_1", 1)
    journal.close()

    journal = Journal(tmp_path)
    assert journal.attempts() == [] and journal.pending_count() == 0
    journal.close()


def test_one_worker_per_data_dir(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    with pytest.raises(JournalBusy):
        Journal(tmp_path)
    journal.close()
    Journal(tmp_path).close()


class FakeClient:
    """Answers from a script, one answer a call: None acks every report in it; an error the
    coordinator would give one report (404, 409, 422) refuses each report in it; any other
    error (unreachable, 503, 401) fails the whole call. ``batch=False``: a coordinator
    without the batch call (it answers 404 to it)."""

    def __init__(self, *answers: Exception | None, batch: bool = True) -> None:
        self.answers = list(answers)
        self.batch = batch
        self.calls: list[list[tuple[str, AttemptReport]]] = []

    @property
    def sent(self) -> list[tuple[str, AttemptReport]]:
        return [item for call in self.calls for item in call]

    async def report(self, job_id: str, report: AttemptReport) -> ReportAck:
        self.calls.append([(job_id, report)])
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        return ReportAck(job_id=job_id, state=JobState.SUCCEEDED)

    async def reports(self, reports: list[WorkerReport]) -> list[ReportOutcome]:
        if not self.batch:
            raise from_problem(404, {"detail": "Not Found"})
        items = [(r.job_id, AttemptReport(**r.model_dump(exclude={"job_id"}))) for r in reports]
        self.calls.append(items)
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            return [ReportOutcome(job_id=j, attempt=r.attempt, state=JobState.SUCCEEDED)
                    for j, r in items]  # fmt: skip
        if not isinstance(answer, CorralError) or answer.status not in (404, 409, 422):
            raise answer
        problem = Problem(title="x", status=answer.status, detail=str(answer), code=answer.code)
        return [ReportOutcome(job_id=j, attempt=r.attempt, error=problem) for j, r in items]


def _stale() -> CorralError:
    return from_problem(409, {"code": "stale_attempt", "detail": "attempt 1 of j has ended"})


async def test_outbox_keeps_a_report_until_acked_even_across_restart(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.finish("j_1", 1, AttemptReport(attempt=1, status="succeeded", result={"acc": 0.9}))
    down = FakeClient(Unreachable("no coordinator answered"), from_problem(503, {}))
    outbox = Outbox(journal, down)  # type: ignore[arg-type]
    assert await outbox.deliver_pending() is False
    assert await outbox.deliver_pending() is False
    journal.close()

    journal = Journal(tmp_path)  # the worker restarted
    up = FakeClient(None)
    changes: list[int] = []
    outbox = Outbox(journal, up, on_change=lambda: changes.append(1))  # type: ignore[arg-type]
    assert not outbox.empty
    assert await outbox.deliver_pending() is True
    assert up.sent[0][1].result == {"acc": 0.9}
    assert outbox.empty and changes == [1]
    journal.close()


@pytest.mark.parametrize(
    "answer", [_stale(), from_problem(404, {"code": "not_found"}), from_problem(422, {"code": "x"})]
)
async def test_outbox_drops_a_report_refused_for_good(tmp_path: Path, answer: CorralError) -> None:
    journal = Journal(tmp_path)
    journal.finish("j_1", 1, AttemptReport(attempt=1, status="failed", exit_code=3))
    outbox = Outbox(journal, FakeClient(answer))  # type: ignore[arg-type]
    assert await outbox.deliver_pending() is True and outbox.empty
    journal.close()


async def test_outbox_refused_token_is_fatal_and_keeps_the_report(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.finish("j_1", 1, AttemptReport(attempt=1, status="succeeded"))
    outbox = Outbox(journal, FakeClient(from_problem(401, {"code": "unauthenticated"})))  # type: ignore[arg-type]
    with pytest.raises(TokenRefused):
        await outbox.deliver_pending()
    assert not outbox.empty
    journal.close()


async def test_outbox_run_retries_with_backoff(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.finish("j_1", 1, AttemptReport(attempt=1, status="succeeded"))
    client = FakeClient(Unreachable("down"), Unreachable("down"), None)
    outbox = Outbox(journal, client, backoff_initial_s=0.01, backoff_max_s=0.02)  # type: ignore[arg-type]
    runner = asyncio.create_task(outbox.run())
    try:
        await _until_empty(outbox)
        assert len(client.sent) == 3
        journal.finish("j_2", 1, AttemptReport(attempt=1, status="failed"))
        outbox.wake()  # a new report goes at once, not after a backoff
        await _until_empty(outbox)
        assert [job for job, _ in client.sent] == ["j_1", "j_1", "j_1", "j_2"]
    finally:
        runner.cancel()
        journal.close()


async def _until_empty(outbox: Outbox) -> None:
    deadline = time.monotonic() + 5
    while not outbox.empty:
        assert time.monotonic() < deadline, "outbox not delivered in time"
        await asyncio.sleep(0.01)


async def test_reports_of_the_moment_go_in_one_call_and_an_end_replaces_a_running(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    client = FakeClient()
    outbox = Outbox(journal, client)  # type: ignore[arg-type]
    started = outbox.running("j_1", AttemptReport(attempt=1, status="running"))
    quick = outbox.running("j_2", AttemptReport(attempt=1, status="running"))
    journal.finish("j_2", 1, AttemptReport(attempt=1, status="succeeded"))  # ended at once
    journal.finish("j_3", 1, AttemptReport(attempt=1, status="failed", exit_code=1))
    assert await outbox.deliver_pending() is True
    [call] = client.calls
    assert [(j, r.status) for j, r in call] == [("j_1", "running"), ("j_2", "succeeded"),
                                                ("j_3", "failed")]  # fmt: skip
    assert (await started).state == JobState.SUCCEEDED  # type: ignore[union-attr]
    assert await quick is None  # said by its end instead
    assert outbox.empty
    journal.close()


async def test_a_stale_report_in_a_batch_does_not_hold_back_the_others(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.finish("j_1", 1, AttemptReport(attempt=1, status="succeeded"))
    outbox = Outbox(journal, FakeClient(_stale()))  # type: ignore[arg-type]
    running = outbox.running("j_2", AttemptReport(attempt=1, status="running"))
    assert await outbox.deliver_pending() is True and outbox.empty
    with pytest.raises(CorralError) as refused:
        await running
    assert refused.value.code == "stale_attempt"  # its attempt stops on that
    journal.close()


async def test_a_coordinator_without_the_batch_call_gets_the_reports_one_by_one(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    for n in (1, 2):
        journal.finish(f"j_{n}", 1, AttemptReport(attempt=1, status="succeeded"))
    client = FakeClient(None, _stale(), batch=False)
    outbox = Outbox(journal, client)  # type: ignore[arg-type]
    assert await outbox.deliver_pending() is True and outbox.empty
    assert [len(call) for call in client.calls] == [1, 1]
    journal.close()


async def test_an_unreachable_coordinator_fails_the_running_reports_and_keeps_the_ends(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    journal.finish("j_1", 1, AttemptReport(attempt=1, status="succeeded"))
    outbox = Outbox(journal, FakeClient(Unreachable("down")))  # type: ignore[arg-type]
    running = outbox.running("j_2", AttemptReport(attempt=1, status="running"))
    assert await outbox.deliver_pending() is False
    with pytest.raises(Unreachable):
        await running
    assert not outbox.empty  # the end goes with the next try
    journal.close()


async def test_many_reports_go_in_calls_of_a_bounded_size(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    big = {"blob": "x" * 1_000_000}  # about 1 MB each: four to a call
    for n in range(6):
        journal.finish(f"j_{n}", 1, AttemptReport(attempt=1, status="succeeded", result=big))
    client = FakeClient()
    outbox = Outbox(journal, client)  # type: ignore[arg-type]
    assert await outbox.deliver_pending() is True and outbox.empty
    assert [len(call) for call in client.calls] == [4, 2]
    journal.close()
