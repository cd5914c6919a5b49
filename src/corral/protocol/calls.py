"""Many jobs in one request: a batch submit, and waiting for many jobs at once."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from corral.protocol._wire import Wire
from corral.protocol.schemas import JobSubmit, JobView

__all__ = ["MAX_BATCH", "BatchJob", "BatchResult", "BatchSubmit", "WaitMany", "WaitResult"]

# One transaction holds the whole batch; bigger lists go as several batches (the clients'
# submit_many does that).
MAX_BATCH = 1000
MAX_BATCH_PICKLED_CHARS = 16 * 1024 * 1024  # all of a batch's pickled callables together
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=200)]


class BatchJob(JobSubmit):
    idempotency_key: IdempotencyKey | None = Field(
        default=None, description="as the Idempotency-Key header of a single submit: a "
        "repeat returns the job it created (the same key, the same job, either way)",
    )  # fmt: skip


class BatchSubmit(Wire):
    jobs: list[BatchJob] = Field(min_length=1, max_length=MAX_BATCH)

    @field_validator("jobs")
    @classmethod
    def _pickles_fit(cls, jobs: list[BatchJob]) -> list[BatchJob]:
        total = sum(len(j.call.pickled or "") for j in jobs if j.call is not None)
        if total > MAX_BATCH_PICKLED_CHARS:
            raise ValueError(
                f"pickled callables of one batch: at most {MAX_BATCH_PICKLED_CHARS} "
                f"characters in all, not {total}"
            )
        return jobs


class BatchResult(BaseModel):
    jobs: list[JobView] = Field(description="in the order submitted")
    created: list[bool] = Field(description="False where an idempotency key replayed a job")


class WaitMany(Wire):
    ids: list[Annotated[str, Field(max_length=100)]] = Field(min_length=1, max_length=MAX_BATCH)
    timeout_s: float = Field(default=30.0, ge=0, le=60, description="the longest it waits")


class WaitResult(BaseModel):
    jobs: list[JobView] = Field(description="those of ids that have ended (any, as found)")
    pending: list[str] = Field(description="those still queued or running")
