"""Corral: run machine-learning jobs on a fleet of machines."""

__version__ = "0.1.0"
