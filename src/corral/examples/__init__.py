"""Jobs that ship with Corral: real training runs used by ``corral up --demo`` and the tests."""
