"""``python -m corral.cli``: how ``corral up`` starts its workers without relying on PATH."""

from corral.cli.main import main

main()
