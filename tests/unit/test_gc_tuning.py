"""A coordinator's process raises only the youngest generation's threshold."""

from __future__ import annotations

import gc

from corral.cli import _gc


def test_the_youngest_threshold_is_raised_and_the_older_ones_kept():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        _gc.tune_for_a_server()
        assert gc.get_threshold() == (_gc.YOUNGEST, 11, 12)
        assert _gc.YOUNGEST > 700
    finally:
        gc.set_threshold(*before)
