"""Request ids: the caller's `x-request-id` comes back (in the trailing metadata of a unary call,
the initial metadata of a response stream) and is on every server log line of its request; a
call without one gets a fresh id."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from automator67.v1 import node_service_pb2 as pb
from automator67.v1 import node_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import StartController, open_channel
from .controller_process import ControllerProcess, LogLine
from .rpc_errors import rpc_error

if TYPE_CHECKING:
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

KEY = "x-request-id"
LOG_WAIT_S = 10.0


@pytest.fixture
def controller(shared_controller: ControllerProcess) -> ControllerProcess:
    """These tests share one server: none depends on what another stored, none stops it."""
    return shared_controller


def request_id_in(metadata: Any) -> str:
    ids = [value for key, value in metadata or () if key == KEY]
    assert len(ids) == 1, f"expected one {KEY} in {metadata}"
    assert isinstance(ids[0], str)
    return ids[0]


async def log_line(process: ControllerProcess, request_id: str, msg: str) -> LogLine:
    """The line `msg` logged for `request_id`. The server may log it just after it answers, so
    this waits for it (off the event loop)."""

    def wanted(line: LogLine) -> bool:
        return line.get("request_id") == request_id and line.get("msg") == msg

    return await asyncio.to_thread(process.log.wait_for, wanted, LOG_WAIT_S)


async def test_the_callers_request_id_comes_back(node_stub: NodeServiceAsyncStub) -> None:
    call = node_stub.GetNodeStats(pb.GetNodeStatsRequest(), metadata=((KEY, "op-42.retry:1"),))

    await call

    assert request_id_in(await call.trailing_metadata()) == "op-42.retry:1"


async def test_a_call_without_a_request_id_gets_a_fresh_one(
    node_stub: NodeServiceAsyncStub,
) -> None:
    first = node_stub.GetNodeStats(pb.GetNodeStatsRequest())
    second = node_stub.GetNodeStats(pb.GetNodeStatsRequest())
    await first
    await second

    ids = {request_id_in(await call.trailing_metadata()) for call in (first, second)}

    assert len(ids) == 2
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)


async def test_a_request_id_that_is_not_sane_is_replaced(node_stub: NodeServiceAsyncStub) -> None:
    unsafe = "two words; and 200 more characters " + "x" * 200
    call = node_stub.GetNodeStats(pb.GetNodeStatsRequest(), metadata=((KEY, unsafe),))

    await call

    returned = request_id_in(await call.trailing_metadata())
    assert returned != unsafe
    assert re.fullmatch(r"[0-9a-f]{32}", returned)


async def test_a_failed_call_returns_its_request_id_and_logs_the_failure_with_it(
    controller: ControllerProcess, node_stub: NodeServiceAsyncStub
) -> None:
    request_id = f"missing-node-{uuid.uuid4().hex}"
    call = node_stub.GetNode(
        pb.GetNodeRequest(node_id=str(uuid.uuid4())), metadata=((KEY, request_id),)
    )

    error = await rpc_error(call)

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert request_id_in(error.trailing_metadata()) == request_id
    line = await log_line(controller, request_id, "rpc failed")
    assert line["method"] == "/automator67.v1.NodeService/GetNode"
    assert line["code"] == "NOT_FOUND"


async def test_every_log_line_of_a_request_carries_its_id(
    start_controller: StartController,
) -> None:
    # At debug level the interceptor logs every call it finishes, successful ones included.
    process = start_controller(log_level="debug")
    async with open_channel(process.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        request_id = f"stats-{uuid.uuid4().hex}"
        await stub.GetNodeStats(pb.GetNodeStatsRequest(), metadata=((KEY, request_id),))
        other = stub.GetNodeStats(pb.GetNodeStatsRequest())
        await other

        line = await log_line(process, request_id, "rpc done")
        other_id = request_id_in(await other.trailing_metadata())
        await log_line(process, other_id, "rpc done")

    assert line["method"] == "/automator67.v1.NodeService/GetNodeStats"
    assert line["code"] == "OK"
    mine = [entry for entry in process.log_lines if entry.get("request_id") == request_id]
    assert all(entry["msg"] == "rpc done" for entry in mine), mine
    # The id does not leak onto lines of other requests or of the server itself.
    serving = [entry for entry in process.log_lines if entry.get("msg") == "serving"]
    assert serving and "request_id" not in serving[0]


async def test_health_checks_get_request_ids_too(controller: ControllerProcess) -> None:
    async with open_channel(controller.address) as channel:
        call = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), metadata=((KEY, "probe-1"),)
        )
        await call
        assert request_id_in(await call.trailing_metadata()) == "probe-1"


async def test_a_response_stream_gets_its_request_id_before_its_first_message(
    node_stub: NodeServiceAsyncStub,
) -> None:
    call = node_stub.WatchNodes(pb.WatchNodesRequest(), metadata=((KEY, "watch-1"),))
    try:
        assert request_id_in(await call.initial_metadata()) == "watch-1"
    finally:
        call.cancel()
