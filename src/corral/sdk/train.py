"""``python -m corral.sdk.train module:function``: what a job of kind ``train`` runs.

It imports ``module`` (the job's directory first on ``sys.path``, so a module of the
submitted ``--workdir`` is found), calls ``function(config)`` with the job's parameters
(``corral.sdk.context().params``, the ``--config`` file it was submitted with), and keeps
what it returns as the job's result: a dict as it is, anything else as ``{"value": …}``.
The function reports, checkpoints and resumes through ``corral.sdk`` as any job does. Run by
hand, ``CORRAL_PARAMS='{"lr": 0.1}' python -m corral.sdk.train mod:fn`` does the same.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from corral import sdk


def imported(spec: str) -> Any:
    """The callable ``module:qualname`` names, its module imported (once: sys.modules keeps
    it); ValueError or TypeError when it names none."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"{spec!r} is not module:function")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target


def _entry(spec: str) -> Any:
    sys.path.insert(0, os.getcwd())
    try:
        return imported(spec)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"corral.sdk.train: {exc}") from None


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m corral.sdk.train module:function")
    returned = _entry(argv[0])(sdk.context().params)
    if returned is not None:
        sdk.set_result(returned if isinstance(returned, dict) else {"value": returned})


if __name__ == "__main__":
    main(sys.argv[1:])
