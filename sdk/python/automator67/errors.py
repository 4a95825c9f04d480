"""Typed errors: every failed call raises an `ApiError` subclass chosen by its status code.

    try:
        client.get_node(node_id)
    except NotFoundError as error:
        print(error.reason, error.metadata)  # "NODE_NOT_FOUND" {"node_id": "..."}

An error carries what the controller put in the `grpc-status-details-bin` trailer: the
`google.rpc.ErrorInfo` (`reason`, a stable UPPER_SNAKE_CASE word to branch on, its `domain` and
`metadata`, e.g. `current_etag` on ETAG_MISMATCH) and, for INVALID_ARGUMENT, the
`google.rpc.BadRequest` field violations. Branch on the class and the reason, never on the
message. The classes follow google-api-core's: one base class, one subclass per code, and
`ConflictError` above `AlreadyExistsError` and `AbortedError` (HTTP 409 in both cases)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "automator67.io"
DETAILS_TRAILER = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request, e.g. `node.capabilities.cpu_cores`."""

    field: str
    description: str
    reason: str = ""


class ApiError(Exception):
    """A call that failed. `code` is the gRPC status code, `message` the status message,
    `reason`/`domain`/`metadata` come from `google.rpc.ErrorInfo` ("" and {} if the status had
    none: errors made by gRPC itself, such as a deadline or an unreachable server),
    `field_violations` from `google.rpc.BadRequest`, `details` are every detail message
    unpacked (or left as `Any` when this library does not know its type)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        details: Sequence[Any] = (),
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.details: tuple[Any, ...] = tuple(details)

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class CancelledError(ApiError):
    code = grpc.StatusCode.CANCELLED


class UnknownError(ApiError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(ApiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class ConflictError(ApiError):
    """The request conflicts with the current state: AlreadyExistsError or AbortedError."""


class AlreadyExistsError(ConflictError):
    code = grpc.StatusCode.ALREADY_EXISTS


class AbortedError(ConflictError):
    """E.g. reason ETAG_MISMATCH, with the resource's `current_etag` in `metadata`."""

    code = grpc.StatusCode.ABORTED


class PermissionDeniedError(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhaustedError(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRangeError(ApiError):
    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(ApiError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(ApiError):
    code = grpc.StatusCode.INTERNAL


class UnavailableError(ApiError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(ApiError):
    code = grpc.StatusCode.DATA_LOSS


_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    cls.code: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        AbortedError,
        PermissionDeniedError,
        UnauthenticatedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
    )
}


def error_class(code: grpc.StatusCode) -> type[ApiError]:
    """The ApiError subclass of `code` (ApiError itself for OK or an unknown code)."""
    return _BY_CODE.get(code, ApiError)


def from_rpc_error(error: grpc.RpcError) -> ApiError:
    """The typed error of a failed grpc call (sync or asyncio), with its rich details. The
    result's `__cause__` is `error` once raised with `raise ... from error`."""
    code = _call(error, "code") or grpc.StatusCode.UNKNOWN
    message = _call(error, "details") or ""
    status = _rich_status(_call(error, "trailing_metadata") or ())
    return from_status(code, message, status)


def from_status(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None = None
) -> ApiError:
    """The typed error of a status code, its message and its `google.rpc.Status` (if any)."""
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    details: list[Any] = []
    for packed in status.details if status is not None else ():
        detail = _unpack(packed)
        details.append(detail)
        if isinstance(detail, error_details_pb2.ErrorInfo):
            reason, domain, metadata = detail.reason, detail.domain, dict(detail.metadata)
        elif isinstance(detail, error_details_pb2.BadRequest):
            violations += [
                FieldViolation(v.field, v.description, v.reason) for v in detail.field_violations
            ]
    cls = error_class(code)
    return cls(
        message,
        code=code,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        details=details,
    )


_DETAIL_TYPES = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.RequestInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
)


def _unpack(packed: any_pb2.Any) -> Any:
    for message_type in _DETAIL_TYPES:
        if packed.Is(message_type.DESCRIPTOR):
            detail = message_type()
            packed.Unpack(detail)
            return detail
    return packed


def _rich_status(trailers: Any) -> status_pb2.Status | None:
    for key, value in trailers:
        if key == DETAILS_TRAILER and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a malformed trailer must not hide the error itself
                return None
    return None


def _call(error: grpc.RpcError, name: str) -> Any:
    """`error.code()` etc.: grpc's errors are also `grpc.Call`s, but RpcError does not say so."""
    method = getattr(error, name, None)
    return method() if callable(method) else None
