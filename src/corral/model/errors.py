"""One error base; each subclass names a condition, one HTTP status and a stable code.

The coordinator raises them and turns them into problem+json; the client reads problem+json
back into the same classes (``corral.protocol.errors.from_problem``), so both sides of the
wire speak one vocabulary.
"""

from __future__ import annotations

from typing import Any


class CorralError(Exception):
    """Something went wrong in Corral."""

    status: int = 500
    code: str = "internal"

    def __init__(self, detail: str | None = None, *, field: str | None = None) -> None:
        self.detail = detail or (self.__doc__ or self.code).strip()
        self.field = field
        # What the coordinator answered, when this error was read back from the wire.
        self.body: dict[str, Any] = {}
        super().__init__(self.detail)


class InvalidInput(CorralError):
    """The request is not valid."""

    status = 422
    code = "invalid_input"


class IdempotencyKeyReused(InvalidInput):
    """This Idempotency-Key was used before with a different request."""

    code = "idempotency_key_reused"


class TooLarge(InvalidInput):
    """The request or what it uploads is larger than its limit."""

    status = 413
    code = "too_large"


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


class TooManyRequests(CorralError):
    """Too many refused attempts from this address: wait, then try again."""

    status = 429
    code = "too_many_requests"

    def __init__(
        self, detail: str | None = None, *, field: str | None = None, retry_after_s: int = 60
    ) -> None:
        super().__init__(detail, field=field)
        self.retry_after_s = retry_after_s


class Conflict(CorralError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"


class AlreadyExists(Conflict):
    """That already exists."""

    code = "already_exists"


class IllegalTransition(Conflict):
    """That change of state is not allowed from the current state."""

    code = "illegal_transition"


class StaleAttempt(Conflict):
    """The report comes from an attempt that is no longer current; stop it."""

    code = "stale_attempt"


class WorkerBusy(Conflict):
    """The worker is not offline."""

    code = "worker_not_offline"


class StaleRegistration(Conflict):
    """A registration older than the last one taken from this worker; it changes nothing."""

    code = "stale_register"


class NotRegistered(Conflict):
    """The worker must register before it opens its event stream."""

    code = "not_registered"


class ServerError(CorralError):
    """The coordinator failed to handle the request."""

    status = 500
    code = "internal"


class Unavailable(ServerError):
    """The coordinator cannot serve this now (its database is out of reach or full); retry."""

    status = 503
    code = "unavailable"


class Unreachable(CorralError):
    """No coordinator answered."""

    status = 503
    code = "unreachable"
