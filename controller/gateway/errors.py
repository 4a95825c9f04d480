"""Errors over HTTP: the Google API error shape, with the HTTP status of the gRPC code.

    {"error": {"code": 404, "message": "node 'x' not found", "status": "NOT_FOUND",
               "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", ...}]}}

`code` is the HTTP status, `status` the canonical code's name, `details` the `google.rpc.Status`
details the RPC sent (ErrorInfo always; BadRequest for invalid fields), in proto3 JSON. Errors
the gateway finds itself (a body that is not JSON, a field of the wrong type, an unknown path)
are built by the same table as the servicers' (`controller/api/status.py`), so a client reads
one shape whichever layer refused it."""

from __future__ import annotations

import json
from collections.abc import Mapping

import grpc
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc import aio

from controller import errors
from controller.api import status

# The standard mapping (google/rpc/code.proto, grpc-gateway's HTTPStatusFromCode).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_DETAILS_KEY = "grpc-status-details-bin"
assert error_details_pb2  # the detail types must be in the pool to print them as JSON


class GatewayError(Exception):
    """An error answer: a `google.rpc.Status`, sent with `http_status` (default: by its code)."""

    def __init__(
        self,
        rpc_status: status_pb2.Status,
        http_status: int = 0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(rpc_status.message)
        self.status = rpc_status
        self.code = _BY_NUMBER.get(rpc_status.code, grpc.StatusCode.UNKNOWN)
        self.http_status = http_status or HTTP_STATUS.get(self.code, 500)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        details = []
        for detail in self.status.details:
            try:
                details.append(json_format.MessageToDict(detail))
            except (TypeError, KeyError):  # a detail type this process does not know
                details.append({"@type": detail.type_url})
        error = {
            "code": self.http_status,
            "message": self.status.message,
            "status": self.code.name,
            "details": details,
        }
        return {"error": error}

    def json(self) -> str:
        return json.dumps(self.body(), separators=(",", ":"))


def from_domain(error: errors.ControllerError, http_status: int = 0) -> GatewayError:
    """A domain error as the servicers would send it (ErrorInfo, BadRequest, bounded)."""
    grpc_status = status.to_status(error)
    found = _status_of(grpc_status.trailing_metadata)
    if found is None:  # to_status always sends details; this keeps the type honest
        found = status_pb2.Status(code=grpc_status.code.value[0], message=str(error))
    return GatewayError(found, http_status)


def internal(request_id: str) -> GatewayError:
    """What a caller sees of a failure in the gateway itself: the request id, no internals."""
    found = _status_of(status.internal_status(request_id).trailing_metadata)
    return GatewayError(found or status_pb2.Status(code=code_pb2.INTERNAL, message="internal"))


def from_rpc_error(error: aio.AioRpcError) -> GatewayError:
    """The status an RPC ended with, details included."""
    found = _status_of(error.trailing_metadata())
    code = error.code()
    if found is None or found.code != code.value[0]:
        found = status_pb2.Status(code=code.value[0], message=error.details() or "")
    return GatewayError(found)


def refused(code: grpc.StatusCode, reason: str, message: str, http_status: int) -> GatewayError:
    """An error the gateway decides itself (unknown path, wrong method, body too large)."""
    rpc_status = status_pb2.Status(
        code=getattr(code_pb2, code.name), message=message, details=[status.error_info(reason, {})]
    )
    return GatewayError(rpc_status, http_status)


def _status_of(metadata: object) -> status_pb2.Status | None:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == _DETAILS_KEY and isinstance(value, bytes):
            found = status_pb2.Status()
            try:
                found.ParseFromString(value)
            except Exception:  # a peer's garbage: fall back to code and message
                return None
            return found
    return None
