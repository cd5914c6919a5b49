"""A PyTorch model's ``state_dict`` as a checkpoint, in safetensors: a thin layer over
``corral.sdk.checkpoint`` and ``resume``.

    from corral.sdk.state import checkpoint_state, resume_state
    step, state = resume_state() or (-1, None)
    if state is not None:
        model.load_state_dict(state)
    for step in range(step + 1, steps):
        ...
        checkpoint_state(model.state_dict(), step=step)

safetensors holds tensors only (no pickle: loading a checkpoint runs no code); ``meta``
keeps a few strings beside them (an epoch, a learning rate as text). Needs torch and
safetensors (``pip install 'corral[torch]'``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from corral.sdk._checkpoint import checkpoint, resume

__all__ = ["FILE", "checkpoint_state", "resume_state"]

FILE = "state.safetensors"


def checkpoint_state(
    state_dict: dict[str, Any],
    *,
    step: int,
    name: str = "model",
    meta: dict[str, str] | None = None,
) -> Path:
    """Keep ``state_dict`` (tensors by name) as the checkpoint of ``step``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    with tempfile.TemporaryDirectory(prefix="corral-state-") as tmp:
        path = Path(tmp) / FILE
        save_file(tensors, str(path), metadata={"step": str(step), **(meta or {})})
        return checkpoint(path, step=step, name=name)


def resume_state(device: str = "cpu") -> tuple[int, dict[str, Any]] | None:
    """(step, state_dict) of the newest checkpoint that ``checkpoint_state`` kept, its
    tensors on ``device``; None when there is none."""
    ck = resume()
    if ck is None or not ck.path.is_file():
        return None
    from safetensors.torch import load_file

    return ck.step, load_file(os.fspath(ck.path), device=device)
