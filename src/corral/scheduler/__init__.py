"""Matching jobs to workers. Pure: a snapshot in, assignments out, no I/O."""

from corral.scheduler.match import (
    Assignment,
    JobDemand,
    WorkerOffer,
    fits,
    gpus_for,
    labels_match,
    left_over,
    offer,
    plan,
    still_fitting,
    taken,
)

__all__ = [
    "Assignment",
    "JobDemand",
    "WorkerOffer",
    "fits",
    "gpus_for",
    "labels_match",
    "left_over",
    "offer",
    "plan",
    "still_fitting",
    "taken",
]
