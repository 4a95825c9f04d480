"""The Python SDK of the Automator67 controller.

    from automator67 import Client                    # sync
    from automator67.aio import AsyncClient           # asyncio
    from automator67.agent import AgentClient         # heartbeat streams, for agents
    from automator67.v1 import node_pb2, ...          # the generated messages and stubs

Errors are typed (`automator67.errors`), List calls iterate every page (`paging.py`), watches
resume after a broken stream (`watch.py`), reads and creates are retried on UNAVAILABLE
(`retry.py`). It needs only grpcio, protobuf and googleapis-common-protos."""

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
