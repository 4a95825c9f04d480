"""Misbehaving agents: each abuse ends the abuser's own stream with the right status, and nobody
else notices. In every test a bystander agent on its own connection beats all along; at the end
it must still be acked, and the server must still say SERVING.

The controller runs with steady liveness (no deadline passes during a test), so that a status
change seen here is caused by the abuse, never by a slow machine."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import pytest
import pytest_asyncio
from automator67.v1 import agent_service_pb2_grpc, deployment_pb2, node_service_pb2_grpc
from automator67.v1 import heartbeat_pb2 as hb
from automator67.v1 import node_service_pb2 as pb
from grpc import aio

from .conftest import open_channel
from .controller_process import ControllerProcess, Metadata
from .heartbeat_helpers import (
    ADDED,
    READY,
    STEADY,
    WAIT_S,
    Agent,
    Inbox,
    Watch,
    assert_serving,
    beat_request,
    get_node,
    hello_request,
    register_node,
)
from .rpc_errors import bad_request_fields

if TYPE_CHECKING:
    from automator67.v1.agent_service_pb2_grpc import AgentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

HEARTBEAT_METHOD = "/automator67.v1.AgentService/Heartbeat"
FLOOD = 500  # beats written as fast as the client can; the limit is a burst of 10


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """One server for the module: every abuse here must leave it as it was, which the
    bystander of each test checks."""
    process = ControllerProcess(tmp_path_factory.mktemp("abuse") / "data", extra_args=STEADY.args)
    try:
        yield process.start()
    finally:
        process.stop()


@pytest_asyncio.fixture
async def bystander(controller: ControllerProcess) -> AsyncIterator[Agent]:
    """Another node's agent, on its own connection, beating at twice the interval."""
    async with open_channel(controller.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        node = await register_node(stub, "bystander")
        agent = await Agent.connect(agent_service_pb2_grpc.AgentServiceStub(channel), node.id)
        agent.keep_beating(STEADY.interval_s / 2)
        await agent.more_acks(1)
        yield agent
        await agent.discard()


async def assert_unaffected(bystander: Agent, channel: aio.Channel) -> None:
    """The bystander's stream still works, and the server still says SERVING."""
    await bystander.more_acks(1)
    await bystander.stop_beating()
    await bystander.beat()
    assert not bystander.call.done()
    await assert_serving(channel)


async def test_a_second_stream_for_a_node_replaces_the_first(
    node_stub: NodeServiceAsyncStub,
    channel: aio.Channel,
    bystander: Agent,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    node = await register_node(node_stub)
    watch = Watch(node_stub)
    await watch.state()
    first = await Agent.connect(agent_stub, node.id)
    await first.beat()
    await watch.status_change(node.id, READY)

    second = await Agent.connect(agent_stub, node.id)

    assert await first.ended() == grpc.StatusCode.ABORTED
    assert first.inbox.error is not None
    assert "replaced" in str(first.inbox.error.details())
    assert second.session.node_status == READY
    await second.beat()
    await second.beat()
    assert (await get_node(node_stub, node.id)).status == READY
    # The replaced stream's end is no broken stream: the node never left READY. Every event up
    # to one caused after the replacement has been seen.
    marker = await register_node(node_stub)
    _, before = await watch.until(
        lambda e: e.type == ADDED and e.node.id == marker.id, "the marker node"
    )
    assert [e for e in before if e.node.id == node.id] == []
    await assert_unaffected(bystander, channel)


async def test_an_unknown_node_is_not_found(
    node_stub: NodeServiceAsyncStub,
    channel: aio.Channel,
    bystander: Agent,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    unknown = str(uuid.uuid4())
    agent = Agent(agent_stub)

    await agent.send(hello_request(unknown))

    assert await agent.ended() == grpc.StatusCode.NOT_FOUND
    assert agent.inbox.error is not None
    assert unknown in str(agent.inbox.error.details())
    assert agent.messages == []
    await assert_unaffected(bystander, channel)


async def test_a_beat_for_a_node_deleted_meanwhile_is_not_found(
    node_stub: NodeServiceAsyncStub,
    channel: aio.Channel,
    bystander: Agent,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    node = await register_node(node_stub)
    agent = await Agent.connect(agent_stub, node.id)
    await agent.beat()
    await node_stub.DeleteNode(pb.DeleteNodeRequest(node_id=node.id))

    await agent.send(beat_request(agent.sequence + 1))

    assert await agent.ended() == grpc.StatusCode.NOT_FOUND
    await assert_unaffected(bystander, channel)


def _hello(node_id: str = "", agent_version: str = "", drivers: int = 0) -> hb.AgentHello:
    return hb.AgentHello(
        node_id=node_id or str(uuid.uuid4()),
        agent_version=agent_version,
        drivers=["d" * 64] * drivers,
    )


# name: (hello, the field the error names)
BAD_HELLOS: dict[str, tuple[hb.AgentHello, str]] = {
    "no node id": (hb.AgentHello(agent_version="0.1.0"), "hello.node_id"),
    "a node id that is no uuid": (_hello("not-a-uuid"), "hello.node_id"),
    "an uppercase uuid": (_hello(str(uuid.uuid4()).upper()), "hello.node_id"),
    "a 10k-character node id": (_hello("x" * 10_000), "hello.node_id"),
    "an agent version over 64 characters": (_hello(agent_version="v" * 65), "hello.agent_version"),
    "17 drivers": (_hello(drivers=17), "hello.drivers"),
    "a driver name over 64 characters": (
        hb.AgentHello(node_id=str(uuid.uuid4()), drivers=["d" * 65]),
        "hello.drivers",
    ),
}


@pytest.mark.parametrize("case", BAD_HELLOS)
async def test_a_malformed_hello_is_invalid_argument_naming_its_field(
    case: str,
    node_stub: NodeServiceAsyncStub,
    channel: aio.Channel,
    bystander: Agent,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    hello, field = BAD_HELLOS[case]
    agent = Agent(agent_stub)

    await agent.send(hb.HeartbeatRequest(hello=hello))

    assert await agent.ended() == grpc.StatusCode.INVALID_ARGUMENT
    assert agent.inbox.error is not None
    assert bad_request_fields(agent.inbox.error) == [field]
    assert agent.messages == []
    await assert_unaffected(bystander, channel)


async def test_a_beat_before_hello_is_invalid_argument(
    node_stub: NodeServiceAsyncStub,
    channel: aio.Channel,
    bystander: Agent,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    agent = Agent(agent_stub)

    await agent.send(beat_request(1))

    assert await agent.ended() == grpc.StatusCode.INVALID_ARGUMENT
    assert agent.inbox.error is not None
    assert bad_request_fields(agent.inbox.error) == ["hello"]
    await assert_unaffected(bystander, channel)


async def test_a_second_hello_is_invalid_argument(
    node_stub: NodeServiceAsyncStub,
    channel: aio.Channel,
    bystander: Agent,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    node = await register_node(node_stub)
    agent = await Agent.connect(agent_stub, node.id)
    await agent.beat()

    await agent.send(hello_request(node.id))

    assert await agent.ended() == grpc.StatusCode.INVALID_ARGUMENT
    assert agent.inbox.error is not None
    assert bad_request_fields(agent.inbox.error) == ["beat"]
    await assert_unaffected(bystander, channel)


def _replicas(
    count: int,
    *,
    deployment_id: str = "",
    state: deployment_pb2.ReplicaState.ValueType = deployment_pb2.REPLICA_STATE_RUNNING,
    message: str = "",
) -> list[hb.ReplicaReport]:
    deployment_id = deployment_id or str(uuid.uuid4())
    return [
        hb.ReplicaReport(deployment_id=deployment_id, replica_index=i, state=state, message=message)
        for i in range(count)
    ]


# name: (beats sent after hello, the last one bad; the field the error names)
BAD_BEATS: dict[str, tuple[list[hb.Beat], str]] = {
    "a repeated sequence": ([hb.Beat(sequence=5), hb.Beat(sequence=5)], "beat.sequence"),
    "a lower sequence": ([hb.Beat(sequence=5), hb.Beat(sequence=4)], "beat.sequence"),
    "cpu at 150 percent": (
        [hb.Beat(sequence=1, load=hb.NodeLoad(cpu_percent=150))],
        "beat.load.cpu_percent",
    ),
    "negative cpu": (
        [hb.Beat(sequence=1, load=hb.NodeLoad(cpu_percent=-0.5))],
        "beat.load.cpu_percent",
    ),
    "cpu not a number": (
        [hb.Beat(sequence=1, load=hb.NodeLoad(cpu_percent=math.nan))],
        "beat.load.cpu_percent",
    ),
    "negative memory": (
        [hb.Beat(sequence=1, load=hb.NodeLoad(memory_used_gb=-1))],
        "beat.load.memory_used_gb",
    ),
    "infinite disk": (
        [hb.Beat(sequence=1, load=hb.NodeLoad(disk_used_gb=math.inf))],
        "beat.load.disk_used_gb",
    ),
    "a malformed deployment id": (
        [hb.Beat(sequence=1, replicas=_replicas(1, deployment_id="web"))],
        "beat.replicas[0].deployment_id",
    ),
    "a replica message over 1024 characters": (
        [hb.Beat(sequence=1, replicas=_replicas(1, message="m" * 1025))],
        "beat.replicas[0].message",
    ),
    "a replica state agents do not report": (
        [hb.Beat(sequence=1, replicas=_replicas(1, state=deployment_pb2.REPLICA_STATE_PENDING))],
        "beat.replicas[0].state",
    ),
    "more than 1000 replicas": (
        [hb.Beat(sequence=1, replicas=_replicas(1001))],
        "beat.replicas",
    ),
}


@pytest.mark.parametrize("case", BAD_BEATS)
async def test_a_bad_beat_is_invalid_argument_naming_its_field(
    case: str,
    node_stub: NodeServiceAsyncStub,
    channel: aio.Channel,
    bystander: Agent,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    *good, bad = BAD_BEATS[case][0]
    node = await register_node(node_stub)
    agent = await Agent.connect(agent_stub, node.id)
    for beat in good:
        await agent.beat(beat.sequence)

    await agent.send(hb.HeartbeatRequest(beat=bad))

    assert await agent.ended() == grpc.StatusCode.INVALID_ARGUMENT
    assert agent.inbox.error is not None
    assert bad_request_fields(agent.inbox.error) == [BAD_BEATS[case][1]]
    await assert_unaffected(bystander, channel)


def _raw(message: bytes) -> bytes:
    return message


@pytest.mark.parametrize("after_hello", [False, True], ids=["instead of hello", "after hello"])
async def test_garbage_bytes_end_the_stream_with_an_error(
    after_hello: bool,
    controller: ControllerProcess,
    node_stub: NodeServiceAsyncStub,
    channel: aio.Channel,
    bystander: Agent,
) -> None:
    node = await register_node(node_stub)
    async with aio.insecure_channel(controller.address) as raw_channel:
        call = raw_channel.stream_stream(HEARTBEAT_METHOD, _raw, _raw)(
            None, metadata=controller.metadata
        )
        inbox = Inbox(call, bytes)
        if after_hello:
            await call.write(hello_request(node.id).SerializeToString())
            await inbox.first(lambda m: True, "the answer to hello")
            answer = hb.HeartbeatResponse.FromString(inbox.items[0])
            assert answer.WhichOneof("kind") == "session"

        await call.write(b"\xff\xfe garbage")

        code = await inbox.finished()
    # Whatever the code, the stream failed, and not for want of a token.
    assert code not in (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED), code
    await assert_unaffected(bystander, channel)


async def test_a_flood_of_beats_is_resource_exhausted(
    controller: ControllerProcess,
    node_stub: NodeServiceAsyncStub,
    channel: aio.Channel,
    bystander: Agent,
) -> None:
    node = await register_node(node_stub)

    code, details, acks = await asyncio.to_thread(
        flood, controller.address, controller.metadata, node.id
    )

    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert "faster than the heartbeat interval" in details
    # The burst of 10 was acked, and the flood was cut off long before its end.
    assert 10 <= acks < 100, acks
    await assert_unaffected(bystander, channel)


def flood(address: str, metadata: Metadata, node_id: str) -> tuple[grpc.StatusCode, str, int]:
    """Hello, then FLOOD beats as fast as gRPC sends them; returns how the stream ended and
    how many beats were acked.

    grpc's blocking client, on a thread: grpc.aio's writer, when a write races with the
    server's end of the call, overwrites the status the server sent with INTERNAL
    (`set_internal_error` in grpc/aio/_call.py), which a flood makes likely."""
    requests = [hello_request(node_id), *(beat_request(s) for s in range(1, FLOOD + 1))]
    with grpc.insecure_channel(address) as blocking_channel:
        stub = agent_service_pb2_grpc.AgentServiceStub(blocking_channel)
        responses = stub.Heartbeat(iter(requests), timeout=WAIT_S, metadata=metadata)
        acks = 0
        try:
            for response in responses:
                acks += response.WhichOneof("kind") == "ack"
        except grpc.RpcError as error:
            return error.code(), str(error.details()), acks
    raise AssertionError(f"the server took all {FLOOD} beats ({acks} acks)")
