"""The Python SDK of the Automator67 controller.

    from automator67 import Client                    # sync
    from automator67.aio import AsyncClient           # asyncio
    from automator67.agent import AgentClient         # heartbeat streams, for agents
    from automator67.v1 import node_pb2, ...          # the generated messages and stubs

Errors are typed (`automator67.errors`), List calls iterate every page (`paging.py`), watches
resume after a broken stream (`watch.py`), reads and creates are retried on UNAVAILABLE
(`retry.py`). It needs only grpcio, protobuf and googleapis-common-protos."""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from automator67.aio import AsyncClient
    from automator67.client import Client
    from automator67.connection import TLS
    from automator67.errors import (
        AbortedError,
        AlreadyExistsError,
        ApiError,
        CancelledError,
        ConflictError,
        DataLossError,
        DeadlineExceededError,
        FailedPreconditionError,
        FieldViolation,
        InternalError,
        InvalidArgumentError,
        NotFoundError,
        OutOfRangeError,
        PermissionDeniedError,
        ResourceExhaustedError,
        UnauthenticatedError,
        UnavailableError,
        UnimplementedError,
        UnknownError,
    )
    from automator67.retry import Retry

__version__ = "0.1.0"

__all__ = [
    "TLS",
    "AbortedError",
    "AlreadyExistsError",
    "ApiError",
    "AsyncClient",
    "CancelledError",
    "Client",
    "ConflictError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "Retry",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
]

# The names above are imported on first use (PEP 562), not with the package: `automator67.v1`
# (the generated messages, which the controller itself imports) must not load the clients,
# their error and retry modules and grpc's asyncio channel with it.
_HOMES = {
    "AsyncClient": "automator67.aio",
    "Client": "automator67.client",
    "TLS": "automator67.connection",
    "Retry": "automator67.retry",
}


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOMES.get(name, "automator67.errors")), name)
    globals()[name] = value
    return value
