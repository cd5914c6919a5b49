"""Log shipping: numbered batches, in order, resumable, never a split character."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from corral.model.errors import Unreachable
from corral.protocol import LogBatch
from corral.protocol.errors import from_problem
from corral.worker.logship import LogShipper, LogsRefused, _complete_utf8


class Sink:
    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.batches: list[LogBatch] = []
        self.tries = 0

    async def __call__(self, batch: LogBatch) -> None:
        self.tries += 1
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(batch)


def _shipper(path: Path, sink: Sink, **kw: object) -> LogShipper:
    kw.setdefault("interval_s", 0.01)
    return LogShipper(path, attempt=1, send=sink, **kw)  # type: ignore[arg-type]


async def test_ships_live_and_finishes(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"first\n")
    sink = Sink()
    positions: list[tuple[int, int, int]] = []
    shipper = _shipper(path, sink, on_batch=lambda *p: positions.append(p))
    task = asyncio.create_task(shipper.run())
    deadline = time.monotonic() + 5
    while not sink.batches:
        assert time.monotonic() < deadline, "no batch sent"
        await asyncio.sleep(0.01)
    with path.open("ab") as fh:
        fh.write(b"second\n")
    shipper.finish()
    await asyncio.wait_for(task, 5)
    assert "".join(b.data for b in sink.batches) == "first\nsecond\n"
    assert [b.seq for b in sink.batches] == list(range(len(sink.batches)))
    assert positions[0] == (0, 0, 6)


async def test_big_output_is_cut_into_bounded_batches(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    text = "é" * 5000  # two bytes each: cuts must fall between characters
    path.write_bytes(text.encode())
    sink = Sink()
    shipper = _shipper(path, sink, max_bytes=1001)
    shipper.finish()
    await asyncio.wait_for(shipper.run(), 5)
    assert all(len(b.data.encode()) <= 1001 for b in sink.batches)
    assert "".join(b.data for b in sink.batches) == text
    assert "\ufffd" not in "".join(b.data for b in sink.batches)


async def test_coordinator_away_same_batch_same_number(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"hello\n")
    sink = Sink(Unreachable("down"), from_problem(503, {}))
    shipper = _shipper(path, sink, backoff_max_s=0.01)
    shipper.finish()
    await asyncio.wait_for(shipper.run(), 5)
    assert sink.tries == 3 and [(b.seq, b.data) for b in sink.batches] == [(0, "hello\n")]


async def test_resume_after_restart_resends_the_batch_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"aaa\nbbb\nccc\n")
    sink = Sink()
    # The old worker had sent batch 0 ("aaa\n") and was sending batch 1 = "bbb\n".
    shipper = _shipper(path, sink, seq=1, offset=4, resend_end=8)
    shipper.finish()
    await asyncio.wait_for(shipper.run(), 5)
    assert [(b.seq, b.data) for b in sink.batches] == [(1, "bbb\n"), (2, "ccc\n")]


async def test_stale_attempt_stops_shipping(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"x\n")
    sink = Sink(from_problem(409, {"code": "stale_attempt"}))
    shipper = _shipper(path, sink)
    with pytest.raises(LogsRefused) as info:
        await asyncio.wait_for(shipper.run(), 5)
    assert info.value.error.code == "stale_attempt"


async def test_refused_token_stops_shipping(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"x\n")
    sink = Sink(from_problem(401, {"code": "unauthenticated"}))
    with pytest.raises(LogsRefused) as info:
        await asyncio.wait_for(_shipper(path, sink).run(), 5)
    assert info.value.error.status == 401 and sink.tries == 1  # not retried


async def test_unusable_batch_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"x\n")
    sink = Sink(from_problem(422, {"code": "invalid_input"}))
    shipper = _shipper(path, sink)
    shipper.finish()
    await asyncio.wait_for(shipper.run(), 5)
    assert sink.batches == [] and shipper.seq == 1 and shipper.offset == 2


def test_complete_utf8() -> None:
    assert _complete_utf8(b"abc") == 3
    assert _complete_utf8("é".encode()[:1]) == 0
    assert _complete_utf8(b"a" + "€".encode()[:2]) == 1
    assert _complete_utf8(b"a" + "€".encode()) == 4
    assert _complete_utf8(b"a" + "😀".encode()[:3]) == 1
