"""Admission over real gRPC (controller/admission.py, api/admission.py, api/exempt.py): with
registrations and stream opens held at the bound, an operator's reads are still answered, a
registration waits its turn, and one past the queue is refused with a hint to retry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc
import pytest
from automator67.v1 import agent_service_pb2_grpc, heartbeat_pb2, node_service_pb2_grpc
from automator67.v1 import node_service_pb2 as pb
from grpc import aio

from .conftest import StartController, open_channel
from .controller_process import LogLine
from .heartbeat_helpers import WAIT_S, Agent
from .rpc_errors import error_info
from .seed import seed_node

if TYPE_CHECKING:
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

REGISTER = "/automator67.v1.NodeService/RegisterNode"
HEARTBEAT = "/automator67.v1.AgentService/Heartbeat"


def registration(i: int) -> pb.RegisterNodeRequest:
    return pb.RegisterNodeRequest(node=seed_node(), request_id=f"admission-{i}")


def admission(method: str, parked: bool) -> Callable[[LogLine], bool]:
    def matches(line: LogLine) -> bool:
        return (
            line.get("msg") == "admission"
            and line.get("method") == method
            and line.get("parked") is parked
        )

    return matches


async def test_reads_are_answered_while_registrations_wait_at_the_bound(
    start_controller: StartController,
) -> None:
    controller = start_controller(
        log_level="debug",
        extra_args=["--admission-max-inflight", "1", "--admission-max-queued", "1"],
    )
    async with open_channel(controller.address) as channel:
        nodes: NodeServiceAsyncStub = node_service_pb2_grpc.NodeServiceStub(channel)
        first = await nodes.RegisterNode(registration(0))

        # A stream open holds the one slot until its hello is handled: none is sent yet.
        async with open_channel(controller.address, first.agent_token) as agent_channel:
            agent = Agent(agent_service_pb2_grpc.AgentServiceStub(agent_channel))
            await asyncio.to_thread(controller.log.wait_for, admission(HEARTBEAT, False), WAIT_S)

            waiting = asyncio.ensure_future(nodes.RegisterNode(registration(1)))
            await asyncio.to_thread(controller.log.wait_for, admission(REGISTER, True), WAIT_S)

            # The queue (one) is full: the next is refused, with a hint, and retried later.
            with pytest.raises(aio.AioRpcError) as refused:
                await nodes.RegisterNode(registration(2))
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            reason, metadata = error_info(refused.value)
            assert reason == "OVERLOADED"
            assert int(metadata["retry_after_ms"]) > 0

            # Operators' reads pass: neither admitted nor queued behind the registrations.
            stats = await nodes.GetNodeStats(pb.GetNodeStatsRequest())
            assert stats.total == 1
            got = await nodes.GetNode(pb.GetNodeRequest(node_id=first.node.id))
            assert got.node.id == first.node.id
            listed = await nodes.ListNodes(pb.ListNodesRequest())
            assert [n.id for n in listed.nodes] == [first.node.id]
            assert not waiting.done()  # still parked: the stream holds the slot

            # The hello handled, the stream gives the slot up: the parked registration runs.
            await agent.hello(first.node.id)
            second = await asyncio.wait_for(waiting, WAIT_S)
            assert second.node.id != first.node.id
            await agent.close()

        retried = await nodes.RegisterNode(registration(2))
        stats = await nodes.GetNodeStats(pb.GetNodeStatsRequest())
        assert stats.total == 3 and retried.node.id not in (first.node.id, second.node.id)


async def silence() -> AsyncIterator[heartbeat_pb2.HeartbeatRequest]:
    """A request stream that sends nothing and stays open (until its call is cancelled)."""
    await asyncio.Event().wait()
    yield heartbeat_pb2.HeartbeatRequest()  # never reached


async def test_calls_without_a_valid_token_never_take_a_slot(
    start_controller: StartController,
) -> None:
    """Admission sits inside authentication: stream opens and registrations that the auth
    interceptor refuses hold no slot, even while they wait out the refusal's grace, so they
    cannot keep the fleet's registrations waiting."""
    controller = start_controller(
        log_level="debug",
        extra_args=["--admission-max-inflight", "1", "--admission-max-queued", "1"],
    )
    async with (
        open_channel(controller.address, "not-a-token") as forged,
        open_channel(controller.address, "") as anonymous,
        open_channel(controller.address) as admin,
    ):
        # Silent stream opens without a valid token: each is refused, after a grace in which
        # it would have held the one slot, had it been admitted.
        silent = [
            agent_service_pb2_grpc.AgentServiceStub(channel).Heartbeat(silence())
            for channel in (forged, anonymous, forged)
        ]

        def refused_opens(line: LogLine) -> bool:
            def refusal(seen: LogLine) -> bool:
                return (
                    seen.get("msg") == "authentication failed" and seen.get("method") == HEARTBEAT
                )

            return refusal(line) and sum(map(refusal, controller.log.lines)) == len(silent)

        await asyncio.to_thread(controller.log.wait_for, refused_opens, WAIT_S)
        with pytest.raises(aio.AioRpcError) as refused:
            await node_service_pb2_grpc.NodeServiceStub(forged).RegisterNode(registration(0))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

        nodes: NodeServiceAsyncStub = node_service_pb2_grpc.NodeServiceStub(admin)
        registered = [await nodes.RegisterNode(registration(i)) for i in (1, 2)]
        assert len({r.node.id for r in registered}) == 2

        stats = await nodes.GetNodeStats(pb.GetNodeStatsRequest())
        assert stats.total == 2
        for call in silent:
            call.cancel()
    # Only the admin's two registrations went through the gate, neither of them parked.
    gated = [line for line in controller.log.lines if line.get("msg") == "admission"]
    assert [(line.get("method"), line.get("parked")) for line in gated] == [
        (REGISTER, False),
        (REGISTER, False),
    ]
