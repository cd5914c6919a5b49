"""Matching jobs to workers. Pure: a snapshot in, assignments out, no I/O."""

from corral.scheduler.match import Assignment, JobDemand, WorkerOffer, labels_match, plan

__all__ = ["Assignment", "JobDemand", "WorkerOffer", "labels_match", "plan"]
