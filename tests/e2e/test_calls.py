"""Call jobs end to end: real coordinator and worker processes, warm interpreters per slot."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest
from harness_e2e import pid_alive, wait_until

from corral.client import CallFailed, call_job

HERE = str(Path(__file__).parent)
ENV = {"PYTHONPATH": HERE}


def _call(fleet, target, *args, **options):
    (job,) = fleet.calls.submit_many([call_job(f"callees:{target}", args, env=ENV, **options)])
    return job.id


def _done(fleet, job_id, seconds=60):
    return fleet.wait_state(job_id, {"succeeded", "failed", "cancelled"}, seconds)


def test_a_call_returns_its_value_logs_its_prints_and_its_interpreter_keeps_state(fleet):
    fleet.start_server()
    fleet.start_worker("w", slots=1)
    first = _done(fleet, _call(fleet, "load_then_count", 1))
    second = _done(fleet, _call(fleet, "load_then_count", 2))
    assert first["state"] == second["state"] == "succeeded", (first, second)
    assert first["result"]["value"]["loaded"] == 1
    # The same interpreter, with what the first task loaded still there.
    assert second["result"]["value"] == {
        "x": 2,
        "loaded": 2,
        "pid": first["result"]["value"]["pid"],
    }
    assert "task 2 sees 2 loaded" in fleet.logs(second["id"])
    assert "task 1" not in fleet.logs(second["id"])  # each task's output is its own


def test_map_returns_in_order_and_names_the_failed_item(fleet):
    fleet.start_server()
    fleet.start_worker("a", slots=2)
    fleet.start_worker("b", slots=2)
    c = fleet.calls
    assert c.map("callees:square", range(40), env=ENV, timeout=120) == [i * i for i in range(40)]
    with pytest.raises(CallFailed) as caught:
        c.map("callees:fail", ["x", "y"], env=ENV, timeout=60)
    assert caught.value.index == 0 and caught.value.item == "x"
    assert "ValueError: x" in caught.value.error and "callees.py" in caught.value.error
    out = c.map("callees:fail", ["z"], env=ENV, timeout=60, return_exceptions=True)
    assert isinstance(out[0], CallFailed) and "ValueError: z" in out[0].error


def test_an_exception_fails_the_job_with_its_traceback_and_the_interpreter_goes_on(fleet):
    fleet.start_server()
    fleet.start_worker("w", slots=1)
    before = _done(fleet, _call(fleet, "pid"))["result"]["value"]
    failed = _done(fleet, _call(fleet, "fail", "no good"))
    assert failed["state"] == "failed"
    assert "Traceback" in failed["error"] and "ValueError: no good" in failed["error"]
    assert "warm_loop" not in failed["error"]  # the task's frames, not the loop's
    assert "about to fail" in fleet.logs(failed["id"])
    assert _done(fleet, _call(fleet, "pid"))["result"]["value"] == before
    bad = _done(fleet, _call(fleet, "not_json"))
    assert bad["state"] == "failed" and "not JSON" in bad["error"]


@pytest.mark.parametrize("how", ["exit", "segv", "kill"])
def test_a_crash_replaces_the_interpreter_and_the_other_slot_goes_on(fleet, tmp_path, how):
    fleet.start_server()
    fleet.start_worker("w", slots=2)
    flag = str(tmp_path / "go")
    other = _call(fleet, "wait_for", flag)  # in the other slot all along
    wait_until(lambda: os.path.exists(flag + ".started"), 60, "the long call to start")
    before = _done(fleet, _call(fleet, "pid"))["result"]["value"]
    crashed = _done(fleet, _call(fleet, "crash", how, retries=0))
    assert crashed["state"] == "failed", crashed
    assert "interpreter" in crashed["error"] and "about to crash" in crashed["error"]
    expected = {"exit": "exited with code 3", "segv": "SIGSEGV", "kill": "SIGKILL"}[how]
    assert expected in crashed["error"]
    assert not pid_alive(before)
    after = _done(fleet, _call(fleet, "pid"))
    assert after["state"] == "succeeded" and after["result"]["value"] != before
    Path(flag).touch()
    assert _done(fleet, other)["result"] == {"value": "done"}


def test_a_call_past_its_timeout_or_cancelled_loses_its_interpreter(fleet, tmp_path):
    fleet.start_server()
    fleet.start_worker("w", slots=1)
    slow = _done(fleet, _call(fleet, "wait_for", str(tmp_path / "never"), task_timeout=1,
                              retries=0))  # fmt: skip
    assert slow["state"] == "failed" and "timeout of 1s" in slow["error"], slow
    assert [a["outcome"] for a in slow["attempts"]] == ["timed_out"]
    stuck = int((tmp_path / "never.started").read_text())
    wait_until(lambda: not pid_alive(stuck), 10, "the timed-out interpreter to go")
    flag = str(tmp_path / "cancel-me")
    job = _call(fleet, "wait_for", flag)
    wait_until(lambda: os.path.exists(flag + ".started"), 60, "the call to start")
    running = int(Path(flag + ".started").read_text())
    assert fleet.calls.cancel(job).state.value in {"cancelled", "cancelling"}
    assert _done(fleet, job)["state"] == "cancelled"
    wait_until(lambda: not pid_alive(running), 10, "the cancelled call's interpreter to go")
    assert _done(fleet, _call(fleet, "square", 3))["result"] == {"value": 9}


def test_a_worker_killed_during_a_call_has_it_retried_never_accepted_twice(fleet, tmp_path):
    fleet.start_server()
    data = tmp_path / "wdata"
    worker = fleet.start_worker("w", slots=1, data_dir=data)
    flag = str(tmp_path / "go")
    job = _call(fleet, "wait_for", flag, "second run")
    wait_until(lambda: os.path.exists(flag + ".started"), 60, "the call to start")
    interp = int(Path(flag + ".started").read_text())
    worker.kill9()
    wait_until(lambda: not pid_alive(interp), 10, "the interpreter to die with its worker")
    os.remove(flag + ".started")
    Path(flag).touch()  # a second run finishes at once
    fleet.start_worker("w", slots=1, data_dir=data, token=worker.token)
    done = _done(fleet, job, 90)
    assert done["state"] == "succeeded" and done["result"] == {"value": "second run"}, done
    outcomes = [a["outcome"] for a in done["attempts"]]
    # Lost and run again elsewhere; or, when the worker is back within the stream's grace
    # (a loaded machine's timing), kept by its register and run again as the same attempt.
    assert outcomes in (["lost", "succeeded"], ["succeeded"]), outcomes
    succeeded = [e for e in fleet.calls.events(job) if e.kind == "job.succeeded"]
    assert len(succeeded) == 1


def test_a_busy_worker_holds_calls_beyond_its_slots_and_starts_each_as_one_frees(fleet, tmp_path):
    fleet.start_server()
    fleet.start_worker("w", slots=1, CORRAL_WORKER__PREFETCH="2")
    flag = str(tmp_path / "go")
    first = _call(fleet, "wait_for", flag)
    wait_until(lambda: os.path.exists(flag + ".started"), 60, "the first call to start")
    held = [_call(fleet, "square", x) for x in (2, 3)]
    wait_until(lambda: all(fleet.job(j)["state"] == "assigned" for j in held), 30,
               "the next two calls to wait on the busy worker")  # fmt: skip
    over = _call(fleet, "square", 4)
    command = fleet.submit(["true"])["id"]
    time.sleep(1.0)  # dispatch rounds come within milliseconds of a submit
    # Past its prefetch a call waits in the queue; a command never waits on a busy worker.
    assert fleet.job(over)["state"] == "queued"
    assert fleet.job(command)["state"] == "queued"
    # A waiting call cancelled ends without having run, and makes room for the next.
    fleet.calls.cancel(held[1])
    cancelled = _done(fleet, held[1])
    assert cancelled["state"] == "cancelled", cancelled
    assert cancelled["attempts"][0]["started_at"] is None
    wait_until(lambda: fleet.job(over)["state"] == "assigned", 30, "the third call to be held")
    Path(flag).touch()
    ended = _done(fleet, first)
    assert ended["state"] == "succeeded", ended
    assert _done(fleet, held[0])["result"] == {"value": 4}
    assert _done(fleet, over)["result"] == {"value": 16}
    assert _done(fleet, command)["state"] == "succeeded"
    # One slot: each waiting call started only once the one before it had ended.
    spans = [fleet.job(j)["attempts"][-1] for j in (first, held[0], over)]
    for before, after in itertools.pairwise(spans):
        assert after["started_at"] >= before["finished_at"], spans


def test_calls_waiting_on_a_killed_worker_run_elsewhere(fleet, tmp_path):
    fleet.start_server()
    worker = fleet.start_worker("a", slots=1, CORRAL_WORKER__PREFETCH="3")
    flag = str(tmp_path / "go")
    first = _call(fleet, "wait_for", flag, "again")
    wait_until(lambda: os.path.exists(flag + ".started"), 60, "the first call to start")
    held = [_call(fleet, "square", x) for x in (5, 6, 7)]
    wait_until(lambda: all(fleet.job(j)["state"] == "assigned" for j in held), 30,
               "the calls to wait on the busy worker")  # fmt: skip
    worker.kill9()
    Path(flag).touch()
    fleet.start_worker("b", slots=2)
    assert _done(fleet, first, 90)["result"] == {"value": "again"}
    for job, x in zip(held, (5, 6, 7), strict=True):
        done = _done(fleet, job, 90)
        assert done["result"] == {"value": x * x}, done
        assert [a["outcome"] for a in done["attempts"]] == ["lost", "succeeded"], done


def test_a_call_that_ends_at_once_is_reported_by_its_end_alone(fleet):
    fleet.start_server()
    fleet.start_worker("w", slots=1)
    kinds = []
    for x in range(10):
        job = _call(fleet, "square", x)
        assert _done(fleet, job)["result"] == {"value": x * x}
        kinds.append([e.kind for e in fleet.calls.events(job)])
    # Its running report waited for company, and its end came first: one call, not two.
    alone = [k for k in kinds if "job.running" not in k]
    assert alone, kinds
    assert all(k[-1] == "job.succeeded" and "job.assigned" in k for k in kinds), kinds
