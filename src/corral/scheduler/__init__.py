"""Matching jobs to workers. Pure: a snapshot in, assignments out, no I/O."""

from corral.scheduler.match import (
    Assignment,
    Budget,
    JobDemand,
    WorkerOffer,
    fits,
    gpus_for,
    labels_match,
    left_over,
    misfit,
    offer,
    plan,
    room,
    still_fitting,
    taken,
)
from corral.scheduler.preempt import Victim, preemptions
from corral.scheduler.why import Candidate, Verdict, explain

__all__ = [
    "Assignment",
    "Budget",
    "Candidate",
    "JobDemand",
    "Verdict",
    "Victim",
    "WorkerOffer",
    "explain",
    "fits",
    "gpus_for",
    "labels_match",
    "left_over",
    "misfit",
    "offer",
    "plan",
    "preemptions",
    "room",
    "still_fitting",
    "taken",
]
