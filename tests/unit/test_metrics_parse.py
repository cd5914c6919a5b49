"""The coordinator and the worker read what corral.sdk.report printed: the two sides of one
line format."""

from __future__ import annotations

import contextlib
import io
import math

from corral import sdk
from corral.protocol import metric_lines as metrics


def _printed(**kw: object) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        sdk.report(**kw)  # type: ignore[arg-type]
    return out.getvalue()


def test_what_report_prints_is_what_the_coordinator_reads() -> None:
    assert metrics.METRIC_PREFIX == sdk.METRIC_PREFIX
    text = _printed(step=3, loss=0.25, accuracy=1, diverged=math.nan, note="warm-up",
                    flag=True, shape=[1, 2])  # fmt: skip
    assert metrics.parse(text) == [(3, "loss", 0.25), (3, "accuracy", 1.0), (3, "diverged", None)]
    assert metrics.parse(_printed(throughput=12.5)) == [(None, "throughput", 12.5)]


def test_only_whole_metric_lines_count() -> None:
    text = ("epoch 1\ncorral.metric {\"step\": 1, \"loss\": 2}\n"
            "corral.metric {broken\nsay corral.metric {\"loss\": 9}\n"
            "corral.metric [1, 2]\ncorral.metric {\"step\": -1, \"loss\": 3}\n")  # fmt: skip
    assert metrics.parse(text) == [(1, "loss", 2.0), (None, "loss", 3.0)]
    long_name = "x" * (metrics.MAX_NAME + 1)
    assert metrics.parse(f'corral.metric {{"{long_name}": 1}}\n') == []
    many = "".join(f'corral.metric {{"step": {i}, "a": 1, "b": 2}}\n' for i in range(6000))
    assert len(metrics.parse(many)) == metrics.MAX_PER_BATCH
