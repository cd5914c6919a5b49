"""The ``corral`` command: parse flags, call the coordinator through one client, print."""
