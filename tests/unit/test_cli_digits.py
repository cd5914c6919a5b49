"""The main job's settings and arguments (its training runs in tests/integration/test_digits.py)."""

from __future__ import annotations

import pytest

from corral.examples import digits

pytest.importorskip("sklearn")


def test_sweep_is_one_job_per_setting() -> None:
    settings = digits.sweep(epochs=3)
    assert len(settings) == len(digits.SWEEP_HIDDEN) * len(digits.SWEEP_LR) == 6
    assert len({(s["hidden"], s["lr"]) for s in settings}) == 6
    argv = digits.command(settings[0], python="py")
    assert argv[:3] == ["py", "-m", "corral.examples.digits"]
    assert argv[argv.index("--epochs") + 1] == "3"


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        digits.main(["--epochs", "0"])
    assert exc.value.code == 2
