"""Retry or give up: one reading of the coordinator's error answers for the whole worker."""

from __future__ import annotations

import pytest

from corral.model.errors import CorralError, Unreachable
from corral.protocol.errors import from_problem
from corral.worker._retry import Backoff, Verdict, retrying, verdict


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "unauthenticated", Verdict.FATAL),
        (403, "permission_denied", Verdict.FATAL),
        (404, "not_found", Verdict.DROP),
        (409, "stale_attempt", Verdict.DROP),
        (409, "conflict", Verdict.DROP),
        (500, "internal", Verdict.RETRY),
        (503, "unavailable", Verdict.RETRY),
        (408, "", Verdict.RETRY),
        (429, "too_many", Verdict.RETRY),
        (422, "invalid_input", Verdict.GIVE_UP),
        (413, "too_large", Verdict.GIVE_UP),
        (400, "", Verdict.GIVE_UP),
    ],
)
def test_verdict_of_each_answer(status: int, code: str, expected: Verdict) -> None:
    assert verdict(from_problem(status, {"code": code})) is expected


def test_no_answer_at_all_is_retried() -> None:
    assert verdict(Unreachable("no coordinator answered")) is Verdict.RETRY


async def test_retrying_retries_what_may_pass_later_and_lets_the_rest_out() -> None:
    answers: list[Exception] = [Unreachable("down"), from_problem(503, {}), ValueError("odd")]
    seen: list[Exception] = []
    tries = 0
    with pytest.raises(ValueError, match="odd"):
        async for attempt in retrying(initial_s=0.001, max_s=0.001, on_retry=seen.append):
            with attempt:
                tries += 1
                raise answers.pop(0)
    assert tries == 3 and [type(e) for e in seen] == [Unreachable, type(from_problem(503, {}))]

    refused = from_problem(422, {"code": "invalid_input"})
    with pytest.raises(CorralError) as info:
        async for attempt in retrying(initial_s=0.001, max_s=0.001, also=(ValueError,)):
            with attempt:
                raise refused
    assert info.value is refused  # not retried: the same bytes will never be taken


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(1.0, 4.0)
    waits = [backoff.next() for _ in range(5)]
    for wait, base in zip(waits, [1, 2, 4, 4, 4], strict=True):
        assert 0.5 * base <= wait <= 1.5 * base
    backoff.reset()
    assert 0.5 <= backoff.next() <= 1.5
