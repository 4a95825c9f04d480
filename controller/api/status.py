"""The one table from domain errors to gRPC status codes, and the status details sent with them.

Every status is bounded here, whatever the error: grpc clients refuse trailers over 8 KB
("received metadata size exceeds soft limit") and would see RESOURCE_EXHAUSTED instead of the
real error. The message travels percent-encoded (up to 3 bytes per byte) in `grpc-message` and
again, with the details, base64-encoded in `grpc-status-details-bin`; with the limits below the
two stay under ~6.5 KB even for a message of non-ASCII characters."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from controller import errors

MESSAGE_LIMIT_BYTES = 1024
DETAILS_LIMIT_BYTES = 2560  # the serialized google.rpc.Status, message included
MAX_FIELD_VIOLATIONS = 8  # in the BadRequest detail; the message counts the rest
METADATA_VALUE_LIMIT_BYTES = 128
DOMAIN = "automator67.io"  # ErrorInfo.domain: who defines the reasons

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


def error_info(reason: str, metadata: Mapping[str, str]) -> any_pb2.Any:
    """`google.rpc.ErrorInfo` (AIP-193), packed: the stable reason clients branch on."""
    info = error_details_pb2.ErrorInfo(
        reason=reason,
        domain=DOMAIN,
        metadata={k: errors.clip(v, METADATA_VALUE_LIMIT_BYTES) for k, v in metadata.items()},
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    return packed


def to_status(error: errors.ControllerError) -> grpc.Status:
    """The status for a domain error: `google.rpc.ErrorInfo` always; invalid arguments also carry
    `google.rpc.BadRequest` with the first violations (field and description clipped)."""
    code = code_of(error)
    message = errors.clip(str(error), MESSAGE_LIMIT_BYTES)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    info = error_info(error.reason, error.metadata)
    status.details.append(info)
    if isinstance(error, errors.InvalidArgumentError):
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=errors.clip(v.field, errors.FIELD_LIMIT_BYTES),
                description=errors.clip(v.description, errors.DESCRIPTION_LIMIT_BYTES),
            )
            for v in error.violations[:MAX_FIELD_VIOLATIONS]
        ]
        while True:
            packed = any_pb2.Any()
            packed.Pack(error_details_pb2.BadRequest(field_violations=violations))
            del status.details[:]
            status.details.extend([info, packed])
            if len(violations) <= 1 or status.ByteSize() <= DETAILS_LIMIT_BYTES:
                break
            violations.pop()
    return rpc_status.to_status(status)


def internal_status(request_id: str) -> grpc.Status:
    """What a client sees of an unexpected failure: the request id to quote, no internals."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; quote request id {request_id} when reporting it",
        details=[error_info("INTERNAL", {"request_id": request_id})],
    )
    return rpc_status.to_status(status)
