"""AgentService: the heartbeat stream of node agents, handed to the shared stream handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from automator67.v1 import agent_service_pb2_grpc
from automator67.v1 import heartbeat_pb2 as hb
from grpc import aio

from controller.api.heartbeat_stream import HeartbeatStream

Context = aio.ServicerContext[Any, Any]


class AgentServicer(agent_service_pb2_grpc.AgentServiceServicer):
    def __init__(self, heartbeats: HeartbeatStream) -> None:
        # Each instance binds the shared handler's coroutine itself as Heartbeat: the method
        # below, which only awaits it, would add a frame that every open stream holds for its
        # life (~360 bytes). The method stays for the contract (and reads the same).
        self.Heartbeat = heartbeats.serve  # type: ignore[method-assign,assignment]
        self._heartbeats = heartbeats

    async def Heartbeat(  # type: ignore[override]  # a coroutine writing through the context
        self, request_iterator: AsyncIterator[hb.HeartbeatRequest], context: Context
    ) -> None:
        await self._heartbeats.serve(request_iterator, context)
