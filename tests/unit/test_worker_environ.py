"""The job's environment: what it inherits from the worker, and what never reaches it."""

from __future__ import annotations

from pathlib import Path

from corral.worker.environ import build_env

TOKEN = "wt_never_give_this_to_a_job"


def test_env_is_scrubbed_and_carries_corral_vars(tmp_path: Path) -> None:
    worker_env = {
        "PATH": "/usr/bin",
        "HOME": "/home/w",
        "LC_ALL": "C.UTF-8",
        "CORRAL_WORKER_TOKEN": TOKEN,
        "AWS_SECRET_ACCESS_KEY": "aws",
        "SOME_OTHER": "x",
        "MY_LIB": "lib",
        "SNEAKY": TOKEN,  # named in pass_env, but holds the token
    }
    env = build_env(
        {"LR": "0.1", "PATH": "/job/bin"},
        job_id="j_9",
        attempt=3,
        result_file=tmp_path / "r.json",
        gpus=[2, 3],
        worker_env=worker_env,
        pass_env=["MY_LIB", "SNEAKY"],
        secrets=[TOKEN],
    )
    assert env == {
        "PATH": "/job/bin",
        "HOME": "/home/w",
        "LC_ALL": "C.UTF-8",
        "MY_LIB": "lib",
        "PYTHONUNBUFFERED": "1",
        "LR": "0.1",
        "CORRAL_JOB_ID": "j_9",
        "CORRAL_ATTEMPT": "3",
        "CORRAL_RESULT_FILE": str(tmp_path / "r.json"),
        "CORRAL_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "CORRAL_RESUME_DIR": str(tmp_path / "resume"),
        "CORRAL_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "2,3",
    }
    no_gpu = build_env({}, job_id="j", attempt=1, result_file=tmp_path, gpus=[], worker_env={})
    assert no_gpu["CUDA_VISIBLE_DEVICES"] == ""  # a CPU job on a GPU machine sees no GPU


def test_operator_gpu_limit_is_kept_when_nvml_is_absent(tmp_path: Path) -> None:
    env = build_env({}, job_id="j", attempt=1, result_file=tmp_path, gpus=None,
                    worker_env={"CUDA_VISIBLE_DEVICES": "3"})  # fmt: skip
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
