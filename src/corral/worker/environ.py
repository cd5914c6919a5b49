"""What environment a job gets: an allow-list of the worker's, the job's own, Corral's vars."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from corral.protocol import Gang
from corral.sdk import (
    ENV_ARTIFACT_DIR,
    ENV_ATTEMPT,
    ENV_CHECKPOINT_DIR,
    ENV_JOB_ID,
    ENV_PARAMS,
    ENV_RESULT_FILE,
    ENV_RESUME_DIR,
)

__all__ = ["ALLOWED_ENV", "ALLOWED_PREFIXES", "build_env", "gang_env"]

# What a job inherits from the worker. Anything else (the worker token above all, cloud
# credentials, the operator's shell) stays behind; a job that needs more asks for it in its
# own env, or the operator names it in ``pass_env``.
ALLOWED_ENV = frozenset(
    {
        "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM",
        "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH",
        "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    }
)  # fmt: skip
ALLOWED_PREFIXES = ("LC_",)


def gang_env(gang: Gang) -> dict[str, str]:
    """What torch.distributed reads to join its gang (one process a node; a job that starts
    more, torchrun's, reads the PET_ ones: its --nnodes, --node-rank, --master-addr…)."""
    rank, world = str(gang.rank), str(gang.world_size)
    addr, port = gang.master_addr, str(gang.master_port)
    return {"RANK": rank, "WORLD_SIZE": world, "NODE_RANK": rank, "GROUP_RANK": rank,
            "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": addr, "MASTER_PORT": port,
            "PET_NNODES": world, "PET_NODE_RANK": rank, "PET_MASTER_ADDR": addr,
            "PET_MASTER_PORT": port}  # fmt: skip


def build_env(
    job_env: Mapping[str, str],
    *,
    job_id: str,
    attempt: int,
    result_file: Path,
    gpus: list[int] | None,
    accelerator: str = "cuda",
    gang: Gang | None = None,
    params: Mapping[str, Any] | None = None,
    worker_env: Mapping[str, str] | None = None,
    pass_env: Iterable[str] = (),
    secrets: Iterable[str] = (),
) -> dict[str, str]:
    """The job's environment: allow-listed worker vars < the job's env < Corral's own vars.

    ``gpus`` None leaves CUDA_VISIBLE_DEVICES alone (a machine where no GPU was found); a
    list, even an
    empty one, pins the job to exactly those GPUs so that jobs running side by side never
    share one. Any value holding a secret is dropped, whatever put it there.
    """
    source = os.environ if worker_env is None else worker_env
    extra = set(pass_env)
    env = {
        k: v
        for k, v in source.items()
        if (k in ALLOWED_ENV or k.startswith(ALLOWED_PREFIXES) or k in extra)
        and not k.startswith("CORRAL_")
    }
    env["PYTHONUNBUFFERED"] = "1"  # so output (and sdk.report lines) arrive as they happen
    if gpus is None and "CUDA_VISIBLE_DEVICES" in source:
        # GPUs this worker cannot see through NVML: keep whatever limit its operator set.
        env["CUDA_VISIBLE_DEVICES"] = source["CUDA_VISIBLE_DEVICES"]
    env.update(job_env)
    env[ENV_JOB_ID] = job_id
    env[ENV_ATTEMPT] = str(attempt)
    env[ENV_RESULT_FILE] = str(result_file)
    # Beside the result, in the attempt's .corral (workdir.checkpoint_dir, resume_dir).
    env[ENV_CHECKPOINT_DIR] = str(result_file.parent / "checkpoints")
    env[ENV_RESUME_DIR] = str(result_file.parent / "resume")
    env[ENV_ARTIFACT_DIR] = str(result_file.parent / "artifacts")
    if params is not None:
        env[ENV_PARAMS] = json.dumps(params, separators=(",", ":"))
    if gpus is not None:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the order NVML numbers them in
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpus)
        if accelerator == "rocm":  # HIP and the ROCm runtime read their own
            env["HIP_VISIBLE_DEVICES"] = env["ROCR_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"]
    if gang is not None:
        env.update(gang_env(gang))
    hidden = [s for s in secrets if s]
    return {k: v for k, v in env.items() if not any(s in v or s in k for s in hidden)}
