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


def _entry(spec: str) -> Any:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"corral.sdk.train: {spec!r} is not module:function")
    sys.path.insert(0, os.getcwd())
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise SystemExit(f"corral.sdk.train: {spec} is not callable")
    return target


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m corral.sdk.train module:function")
    returned = _entry(argv[0])(sdk.context().params)
    if returned is not None:
        sdk.set_result(returned if isinstance(returned, dict) else {"value": returned})


if __name__ == "__main__":
    main(sys.argv[1:])
