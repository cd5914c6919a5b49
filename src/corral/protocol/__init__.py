"""The wire: what the coordinator, workers and clients say to each other."""

from corral.protocol.accounts import *  # noqa: F403
from corral.protocol.accounts import __all__ as _accounts
from corral.protocol.calls import *  # noqa: F403
from corral.protocol.calls import __all__ as _calls
from corral.protocol.enrolment import *  # noqa: F403
from corral.protocol.enrolment import __all__ as _enrolment
from corral.protocol.schemas import *  # noqa: F403
from corral.protocol.schemas import __all__ as _schemas

API_VERSION = "1"
WORKER_TOKEN_HEADER = "X-Worker-Token"

__all__ = ["API_VERSION", "WORKER_TOKEN_HEADER", *_schemas, *_calls, *_accounts, *_enrolment]
