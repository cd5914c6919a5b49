"""Call jobs and batches: what the wire accepts, and how the client sends a function."""

from __future__ import annotations

import base64
import os.path
import pickle
from functools import partial

import pytest
from pydantic import ValidationError

from corral.client import InvalidInput, call_job
from corral.client._calls import target_of
from corral.protocol import MAX_BATCH, MAX_PICKLED_CHARS, BatchSubmit, JobSubmit
from corral.server.errors import _field


def _fields(body: dict, model=JobSubmit) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return {".".join(map(str, e["loc"])): e["msg"] for e in caught.value.errors()}


def test_a_call_job_takes_call_and_no_command_and_other_kinds_the_reverse():
    ok = JobSubmit.model_validate({"kind": "call", "call": {"target": "pkg.mod:Cls.method"}})
    assert ok.command is None and ok.call is not None and ok.call.args == []
    assert JobSubmit.model_validate({"command": ["true"]}).call is None
    assert set(_fields({})) == {"command"}
    assert set(_fields({"kind": "train"})) == {"command"}
    assert set(_fields({"kind": "train", "command": ["no_colon"]})) == {"command"}
    assert JobSubmit.model_validate({"kind": "benchmark"}).command is None  # params say it all
    assert set(_fields({"kind": "call"})) == {"call"}
    assert set(_fields({"kind": "call", "call": {"target": "m:f"}, "command": ["x"]})) == {
        "command"
    }
    assert set(_fields({"command": ["x"], "call": {"target": "m:f"}})) == {"call"}


@pytest.mark.parametrize(
    "call",
    [
        {},
        {"target": "m:f", "pickled": "AAAA"},
        {"target": "no_colon"},
        {"target": "m:f; rm -rf /"},
        {"target": "m:f", "args": {"not": "a list"}},
        {"pickled": "not base64!"},
        {"pickled": "A" * (MAX_PICKLED_CHARS + 1)},
        {"target": "m:f", "kwargs": {"x": float("nan")}},
        {"target": "m:f", "args": ["\x00"]},
    ],
)
def test_a_bad_call_is_refused_on_the_call_field(call):
    fields = _fields({"kind": "call", "call": call})
    assert all(f.startswith("call") for f in fields), fields


def test_a_batch_is_capped_and_its_errors_name_the_item():
    assert set(_fields({"jobs": []}, BatchSubmit)) == {"jobs"}
    assert set(_fields({"jobs": [{"command": ["x"]}] * (MAX_BATCH + 1)}, BatchSubmit)) == {"jobs"}
    fields = _fields({"jobs": [{"command": ["x"]}, {"kind": "call"}]}, BatchSubmit)
    assert set(fields) == {"jobs.1.call"}
    big = {"kind": "call", "call": {"pickled": "A" * MAX_PICKLED_CHARS}}
    assert set(_fields({"jobs": [big] * 17}, BatchSubmit)) == {"jobs"}


def test_an_error_path_reads_as_written():
    assert _field(("body", "jobs", 3, "command")) == "jobs[3].command"
    assert _field(("body", "jobs", 0, "call", "args", 2)) == "jobs[0].call.args[2]"
    assert _field(("body", "command")) == "command"
    assert _field(("body",)) == "body"
    assert _field(("query", "limit")) == "query.limit"


def test_an_importable_function_goes_by_name_anything_else_pickled():
    assert target_of(os.path.join) == {"target": "posixpath:join"}
    assert target_of("mod:fn") == {"target": "mod:fn"}

    def local(x: int) -> int:
        return x + 1

    sent = target_of(local)  # cloudpickle is installed with the dev extra
    assert set(sent) == {"pickled"}
    assert pickle.loads(base64.b64decode(sent["pickled"]))(1) == 2
    by_ref = target_of(partial(os.path.join, "a"))
    assert pickle.loads(base64.b64decode(by_ref["pickled"]))("b") == "a/b"


def test_call_job_checks_before_any_request_and_names_the_keyword():
    job = call_job("m:f", (1, 2), {"k": "v"}, labels={"pool": "cpu"}, task_timeout=5)
    assert job.kind == "call" and job.call.args == [1, 2] and job.worker_labels == {"pool": "cpu"}
    with pytest.raises(InvalidInput) as caught:
        call_job("m:f", task_timeout=-1)
    assert caught.value.field == "task_timeout"
    with pytest.raises(InvalidInput) as caught:
        call_job("m:f", (object(),))
    assert caught.value.field.startswith("call")
