"""NodeService: translate the request, call the node registry, translate the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from automator67.v1 import node_service_pb2 as pb
from automator67.v1 import node_service_pb2_grpc
from grpc import aio

from controller.api import convert, encoded
from controller.api.node_update_convert import node_update
from controller.api.watch import Watch
from controller.models import Node
from controller.registry.leadership import Leadership
from controller.registry.nodes import NodeRegistry

Context = aio.ServicerContext[Any, Any]

# Field numbers of the responses answered already encoded (`encoded.py`), from the contract.
_GET_NODE = pb.GetNodeResponse.DESCRIPTOR.fields_by_name["node"].number
_LIST_NODES = pb.ListNodesResponse.DESCRIPTOR.fields_by_name["nodes"].number
_NEXT_PAGE_TOKEN = pb.ListNodesResponse.DESCRIPTOR.fields_by_name["next_page_token"].number


class NodeServicer(node_service_pb2_grpc.NodeServiceServicer):
    def __init__(
        self,
        nodes: NodeRegistry,
        watch: Watch[Node],
        agent_token: Callable[[str], str] | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self._leadership = leadership  # who answers, who leads
        self._nodes = nodes
        self._watch = watch
        self._agent_token = agent_token  # node id -> the token its agent streams with

    async def RegisterNode(
        self, request: pb.RegisterNodeRequest, context: Context
    ) -> pb.RegisterNodeResponse:
        node = await self._nodes.register(convert.node_spec(request), request.request_id)
        token = self._agent_token(node.id) if self._agent_token else ""
        return pb.RegisterNodeResponse(node=convert.node_to_pb(node), agent_token=token)

    @encoded.answers_encoded
    async def GetNode(  # type: ignore[override]  # a GetNodeResponse, serialized
        self, request: pb.GetNodeRequest, context: Context
    ) -> bytes:
        return encoded.field(_GET_NODE, self._encoded(self._nodes.get(request.node_id)))

    @encoded.answers_encoded
    async def ListNodes(  # type: ignore[override]  # a ListNodesResponse, serialized
        self, request: pb.ListNodesRequest, context: Context
    ) -> bytes:
        page = self._nodes.list(request.filter, request.page_size, request.page_token)
        nodes = encoded.repeated(_LIST_NODES, map(self._encoded, page.items))
        token = page.next_page_token
        return nodes + encoded.field(_NEXT_PAGE_TOKEN, token.encode()) if token else nodes

    def _encoded(self, node: Node) -> bytes:
        """The node's message, serialized; converted once per change of the node, not per read
        (the response is framed from these bytes, `encoded.py`)."""
        return convert.node_bytes(
            node, self._nodes.derived(node, convert.node_without_heartbeat_bytes)
        )

    async def DeleteNode(
        self, request: pb.DeleteNodeRequest, context: Context
    ) -> pb.DeleteNodeResponse:
        await self._nodes.delete(request.node_id, request.etag)
        return pb.DeleteNodeResponse()

    async def UpdateNode(
        self, request: pb.UpdateNodeRequest, context: Context
    ) -> pb.UpdateNodeResponse:
        node_id, changes, paths, etag = node_update(request)
        node = await self._nodes.update(node_id, changes, paths, etag)
        return pb.UpdateNodeResponse(node=convert.node_to_pb(node))

    async def GetNodeStats(
        self, request: pb.GetNodeStatsRequest, context: Context
    ) -> pb.GetNodeStatsResponse:
        lead = self._leadership
        if lead is None:
            return convert.node_stats_to_pb(self._nodes.stats())
        return convert.node_stats_to_pb(self._nodes.stats(), lead.replica_id, lead.leader_id)

    async def WatchNodes(  # type: ignore[override]  # a coroutine writing through the context
        self, request: pb.WatchNodesRequest, context: Context
    ) -> None:
        await self._watch.serve(request.start_revision, context)
