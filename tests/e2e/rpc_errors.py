"""Reading failed calls: the status code and the `google.rpc.BadRequest` field violations the
server packs into the `grpc-status-details-bin` trailer."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

DETAILS_KEY = "grpc-status-details-bin"


async def rpc_error(call: Awaitable[Any]) -> aio.AioRpcError:
    """Awaits `call`, which must fail, and returns its error."""
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value


def rich_status(error: aio.AioRpcError) -> Any:
    """The `google.rpc.Status` in the error's trailers; fails the test if there is none."""
    trailers: Any = error.trailing_metadata()  # (key, value) pairs at run time
    for key, value in trailers or ():
        if key == DETAILS_KEY:
            assert isinstance(value, bytes)
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no {DETAILS_KEY} trailer in {error!r}")


def bad_request_fields(error: aio.AioRpcError) -> list[str]:
    """The fields named by the error's BadRequest detail, checking the status agrees with it."""
    status = rich_status(error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == error.details()
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            for violation in bad_request.field_violations:
                assert violation.description, f"violation of {violation.field} has no description"
                fields.append(str(violation.field))
    assert fields, f"no BadRequest field violations in {status}"
    return fields


def error_info(error: aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The reason and metadata of the error's `google.rpc.ErrorInfo` (domain automator67.io)."""
    status = rich_status(error)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "automator67.io"
            return str(info.reason), dict(info.metadata)
    raise AssertionError(f"no ErrorInfo in {status}")
