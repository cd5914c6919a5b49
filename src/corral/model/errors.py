"""One error base; each subclass names a condition, one HTTP status and a stable code."""

from __future__ import annotations


class CorralError(Exception):
    """Something went wrong in Corral."""

    status: int = 500
    code: str = "internal"

    def __init__(self, detail: str | None = None, *, field: str | None = None) -> None:
        self.detail = detail or (self.__doc__ or self.code).strip()
        self.field = field
        super().__init__(self.detail)


class InvalidInput(CorralError):
    """The request is not valid."""

    status = 422
    code = "invalid_input"


class Unauthenticated(CorralError):
    """Missing or invalid credentials."""

    status = 401
    code = "unauthenticated"


class PermissionDenied(CorralError):
    """These credentials may not do that."""

    status = 403
    code = "permission_denied"


class NotFound(CorralError):
    """No such thing."""

    status = 404
    code = "not_found"


class AlreadyExists(CorralError):
    """That already exists."""

    status = 409
    code = "already_exists"


class IllegalTransition(CorralError):
    """That change of state is not allowed from the current state."""

    status = 409
    code = "illegal_transition"


class StaleAttempt(CorralError):
    """The report comes from an attempt that is no longer current; stop it."""

    status = 409
    code = "stale_attempt"


class WorkerBusy(CorralError):
    """The worker is not offline."""

    status = 409
    code = "worker_not_offline"
