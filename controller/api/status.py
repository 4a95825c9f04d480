"""The one table from domain errors to gRPC status codes, and the status details sent with them."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from controller import errors

CODES: dict[type[errors.ControllerError], grpc.StatusCode] = {
    errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.ConflictError: grpc.StatusCode.ABORTED,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
}


def code_of(error: errors.ControllerError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if issubclass(cls, errors.ControllerError) and cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


def to_status(error: errors.ControllerError) -> grpc.Status:
    """The status for a domain error; invalid arguments carry `google.rpc.BadRequest`."""
    code = code_of(error)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=str(error))
    if isinstance(error, errors.InvalidArgumentError):
        detail = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return rpc_status.to_status(status)


def internal_status(request_id: str) -> grpc.Status:
    """What a client sees of an unexpected failure: the request id to quote, no internals."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; quote request id {request_id} when reporting it",
    )
    return rpc_status.to_status(status)
