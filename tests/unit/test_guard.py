"""The resource guard: limits, reasons and the cooldown, on a fake clock."""

from __future__ import annotations

import concurrent.futures
from collections import namedtuple

import pytest

from corral.worker import guard
from corral.worker.guard import Guard, Limits, Sample


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(limits: Limits, steps: list[tuple[float, Sample]]) -> list[str | None]:
    """Each step: seconds to advance the clock, then the sample checked."""
    clock = Clock()
    g = Guard(limits, clock=clock)
    out: list[str | None] = []
    for advance, s in steps:
        clock.now += advance
        out.append(g.check(s))
    return out


LIMITS = Limits(max_cpu_percent=90, max_memory_percent=80, max_gpu_percent=95, cooldown_s=30)
CALM = Sample(cpu_percent=10, memory_percent=20, gpu_percent=[5, 50])


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (CALM, None),
        (Sample(90, 80, [95]), None),  # at a limit is not above it
        (Sample(97, 20), "cpu 97% above the limit of 90%"),
        (Sample(10, 80.5), "memory 80.5% above the limit of 80%"),
        (Sample(10, 20, [3, 99, 40]), "gpu 99% above the limit of 95%"),  # the busiest GPU
        (Sample(10, 20, []), None),
        (Sample(10, 20, None), None),  # GPUs not read: no opinion
        (
            Sample(97.04, 85, [100]),
            "cpu 97% above the limit of 90%; memory 85% above the limit of 80%; "
            "gpu 100% above the limit of 95%",
        ),
    ],
)
def test_reason(sample: Sample, reason: str | None) -> None:
    assert run(LIMITS, [(0, sample)]) == [reason]


def test_cooldown_after_the_load_drops() -> None:
    hot = Sample(97, 20)
    assert run(LIMITS, [(0, hot), (5, CALM), (10, CALM), (19.5, CALM), (0.5, CALM), (1, CALM)]) == [
        "cpu 97% above the limit of 90%",
        "cooling down for 30s after cpu 97% above the limit of 90%",
        "cooling down for 30s after cpu 97% above the limit of 90%",
        "cooling down for 30s after cpu 97% above the limit of 90%",
        None,
        None,
    ]


def test_the_words_stay_while_the_same_limits_are_passed() -> None:
    steps = [(0, Sample(97, 20)), (1, Sample(99, 20)), (1, Sample(99, 90)), (1, Sample(95, 85))]
    assert run(LIMITS, steps) == [
        "cpu 97% above the limit of 90%",
        "cpu 97% above the limit of 90%",  # another value, the same limit: the same words
        "cpu 99% above the limit of 90%; memory 90% above the limit of 80%",
        "cpu 99% above the limit of 90%; memory 90% above the limit of 80%",
    ]


def test_a_new_breach_restarts_the_cooldown() -> None:
    steps = [(0, Sample(97, 20)), (1, CALM), (20, Sample(10, 90)), (1, CALM), (29, CALM), (1, CALM)]
    assert run(LIMITS, steps) == [
        "cpu 97% above the limit of 90%",
        "cooling down for 30s after cpu 97% above the limit of 90%",
        "memory 90% above the limit of 80%",
        "cooling down for 30s after memory 90% above the limit of 80%",
        "cooling down for 30s after memory 90% above the limit of 80%",
        None,
    ]


def test_no_cooldown() -> None:
    limits = Limits(max_cpu_percent=50, cooldown_s=0)
    assert run(limits, [(0, Sample(60, 0)), (0, Sample(40, 0))]) == [
        "cpu 60% above the limit of 50%",
        None,
    ]


def test_no_limits_never_constrain() -> None:
    assert not Limits().any()
    assert Limits(max_gpu_percent=1).any()
    steps = [(0, Sample(100, 100, [100])), (1, CALM), (0, Sample(100, 100))]
    assert run(Limits(), steps) == [None, None, None]


def test_constrained_follows_check() -> None:
    clock = Clock()
    g = Guard(Limits(max_cpu_percent=50, cooldown_s=10), clock=clock)
    assert not g.constrained
    g.check(Sample(60, 0))
    assert g.constrained
    g.check(Sample(0, 0))
    clock.now += 10
    assert g.constrained and g.check(Sample(0, 0)) is None and not g.constrained


Times = namedtuple("Times", "user system idle iowait guest")


def test_cpu_meter_measures_since_the_last_reading() -> None:
    readings = iter([Times(0, 0, 0, 0, 0), Times(30, 10, 50, 10, 5), Times(30, 10, 150, 10, 5)])
    meter = guard.CpuMeter(lambda: next(readings))
    assert meter.percent() == 40.0  # 40 busy of 100 (guest is inside user; iowait is idle)
    assert meter.percent() == 0.0


def test_sample_reads_this_machine_from_any_thread() -> None:
    meter = guard.CpuMeter()
    s = guard.sample([], meter)
    assert 0 <= s.cpu_percent <= 100 and 0 < s.memory_percent <= 100
    assert s.gpu_percent is None
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert all(0 <= p <= 100 for p in pool.map(lambda _: meter.percent(), range(4)))
