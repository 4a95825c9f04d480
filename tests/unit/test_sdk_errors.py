"""The SDK's typed errors, paging and retry delays, without a server: errors are built from
the same trailer the controller sends (`grpc-status-details-bin`)."""

from __future__ import annotations

import grpc
import pytest
from automator67 import errors
from automator67.paging import AsyncPager, Pager
from automator67.retry import Retry
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as ns
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio


def failed_call(code: grpc.StatusCode, message: str, *details: object) -> aio.AioRpcError:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    trailers = aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return aio.AioRpcError(code, aio.Metadata(), trailers, message, None)


def info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain="automator67.io", metadata=metadata)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.NOT_FOUND, errors.NotFoundError),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExistsError),
        (grpc.StatusCode.ABORTED, errors.AbortedError),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgumentError),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDeniedError),
        (grpc.StatusCode.UNAUTHENTICATED, errors.UnauthenticatedError),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPreconditionError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhaustedError),
        (grpc.StatusCode.UNAVAILABLE, errors.UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceededError),
        (grpc.StatusCode.INTERNAL, errors.InternalError),
    ],
)
def test_each_status_code_has_its_class(code: grpc.StatusCode, cls: type[errors.ApiError]) -> None:
    error = errors.from_rpc_error(failed_call(code, "boom"))
    assert type(error) is cls and isinstance(error, errors.ApiError)
    assert (error.code, error.message, error.reason, dict(error.metadata)) == (code, "boom", "", {})


def test_conflicts_share_a_base_class_as_in_google_api_core() -> None:
    assert issubclass(errors.AbortedError, errors.ConflictError)
    assert issubclass(errors.AlreadyExistsError, errors.ConflictError)
    assert not issubclass(errors.NotFoundError, errors.ConflictError)


def test_error_info_gives_the_reason_domain_and_metadata() -> None:
    call = failed_call(
        grpc.StatusCode.ABORTED, "stale etag", info("ETAG_MISMATCH", current_etag="7")
    )
    error = errors.from_rpc_error(call)
    assert isinstance(error, errors.AbortedError)
    assert (error.reason, error.domain, error.metadata["current_etag"]) == (
        "ETAG_MISMATCH",
        "automator67.io",
        "7",
    )
    assert str(error) == "ABORTED ETAG_MISMATCH: stale etag"


def test_bad_request_gives_the_field_violations() -> None:
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="node.provider", description="is required")
    bad.field_violations.add(field="node.capabilities.cpu_cores", description="must be > 0")
    call = failed_call(
        grpc.StatusCode.INVALID_ARGUMENT, "invalid", bad, info("INVALID_FIELD"), any_pb2.Any()
    )
    error = errors.from_rpc_error(call)
    assert [(v.field, v.description) for v in error.field_violations] == [
        ("node.provider", "is required"),
        ("node.capabilities.cpu_cores", "must be > 0"),
    ]
    assert error.reason == "INVALID_FIELD"
    assert len(error.details) == 3  # the unknown detail is kept, packed


def test_a_malformed_or_missing_trailer_still_gives_the_code_and_message() -> None:
    trailers = aio.Metadata(("grpc-status-details-bin", b"\xff\xff not a status"))
    call = aio.AioRpcError(grpc.StatusCode.NOT_FOUND, aio.Metadata(), trailers, "gone", None)
    error = errors.from_rpc_error(call)
    assert (type(error), error.message, error.reason) == (errors.NotFoundError, "gone", "")


def pages_of(*pages: list[str]) -> dict[str, ns.ListNodesResponse]:
    """Pages keyed by the token that fetches them ("" for the first)."""
    out = {}
    for i, ids in enumerate(pages):
        token = f"t{i + 1}" if i + 1 < len(pages) else ""
        nodes = [node_pb2.Node(id=x) for x in ids]
        out["" if i == 0 else f"t{i}"] = ns.ListNodesResponse(nodes=nodes, next_page_token=token)
    return out


def test_a_pager_walks_every_page_lazily() -> None:
    pages = pages_of(["a", "b"], ["c"], ["d"])
    fetched: list[str] = []

    def fetch(token: str) -> ns.ListNodesResponse:
        fetched.append(token)
        return pages[token]

    pager = Pager(fetch, lambda page: page.nodes)
    items = iter(pager)
    assert next(items).id == "a" and fetched == [""]
    assert [n.id for n in items] == ["b", "c", "d"]
    assert fetched == ["", "t1", "t2"]
    assert [len(p.nodes) for p in pager.pages()] == [2, 1, 1]


async def test_an_async_pager_walks_every_page() -> None:
    pages = pages_of(["a"], [], ["b", "c"])

    async def fetch(token: str) -> ns.ListNodesResponse:
        return pages[token]

    pager = AsyncPager(fetch, lambda page: page.nodes)
    assert [n.id for n in await pager.all()] == ["a", "b", "c"]
    assert [n.id async for n in AsyncPager(fetch, lambda p: p.nodes, "t2")] == ["b", "c"]


def test_retry_delays_grow_with_full_jitter_and_stop_at_the_budget() -> None:
    policy = Retry(initial_s=0.1, maximum_s=1.0, multiplier=2.0, deadline_s=None, max_attempts=6)
    assert list(policy.delays(rand=lambda: 0.999999)) == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0], rel=1e-5
    )
    assert list(policy.delays(rand=lambda: 0.0)) == [0.0] * 5
    clock = iter([0.0, 0.0, 0.5, 2.0])
    timed = Retry(initial_s=1.0, maximum_s=1.0, deadline_s=2.5, max_attempts=None)
    assert list(timed.delays(rand=lambda: 0.999999, clock=lambda: next(clock))) == pytest.approx(
        [1.0, 1.0], rel=1e-5
    )
