"""A fleet that registers at once, over real gRPC: registrations share store transactions
(registry/group_commit.py), and every one acknowledged survives a restart as it was answered."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from automator67.v1 import node_pb2, node_service_pb2_grpc
from automator67.v1 import node_service_pb2 as pb

from .conftest import open_channel
from .controller_process import ControllerProcess

if TYPE_CHECKING:
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

AGENTS = 300


def registration(i: int) -> pb.RegisterNodeRequest:
    return pb.RegisterNodeRequest(
        node=node_pb2.Node(
            provider="fly",
            endpoint=f"https://agent-{i}.example.com",
            region="us-east-1",
            capabilities=node_pb2.Capabilities(cpu_cores=2, memory_gb=4),
        ),
        request_id=f"burst-{i}",
    )


async def listed(stub: NodeServiceAsyncStub) -> dict[str, node_pb2.Node]:
    nodes: dict[str, node_pb2.Node] = {}
    token = ""
    while True:
        page = await stub.ListNodes(pb.ListNodesRequest(page_size=1000, page_token=token))
        nodes.update((n.id, n) for n in page.nodes)
        token = page.next_page_token
        if not token:
            return nodes


async def test_every_registration_of_a_burst_is_acknowledged_and_survives_a_restart(
    controller: ControllerProcess,
) -> None:
    async with open_channel(controller.address) as channel:
        stub: NodeServiceAsyncStub = node_service_pb2_grpc.NodeServiceStub(channel)
        replies = await asyncio.gather(*(stub.RegisterNode(registration(i)) for i in range(AGENTS)))
        answered = {r.node.id: r.node for r in replies}
        assert len(answered) == AGENTS
        assert await listed(stub) == answered

    controller.restart()

    async with open_channel(controller.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        assert await listed(stub) == answered
        # Each request id still names its node: a retry after the restart creates nothing.
        again = await asyncio.gather(*(stub.RegisterNode(registration(i)) for i in range(AGENTS)))
        assert [r.node.id for r in again] == [r.node.id for r in replies]
        assert len(await listed(stub)) == AGENTS
