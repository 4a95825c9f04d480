"""A small typed async client of the controller: NodeService and DeploymentService over one
grpc.aio channel, and the agent's heartbeat stream as a `HeartbeatSession`.

    async with ControllerClient("127.0.0.1:50051") as client:
        node = await client.register_node(node_pb2.Node(...), request_id="agent:1")
        async with client.heartbeat(node.id, agent_version="0.1.0") as session:
            await session.beat(heartbeat_pb2.NodeLoad(cpu_percent=12.5))
            response = await session.receive()  # an ack, a Reconnect, or None at the end

Methods return the generated protobuf messages and raise `grpc.aio.AioRpcError` carrying the
server's status code. Unary calls get the client's `timeout_s`; streams get no deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc
from automator67.v1 import (
    agent_service_pb2_grpc,
    deployment_pb2,
    node_pb2,
    node_service_pb2,
    node_service_pb2_grpc,
)
from automator67.v1 import deployment_service_pb2 as ds
from automator67.v1 import deployment_service_pb2_grpc as ds_grpc
from automator67.v1 import heartbeat_pb2 as hb
from grpc import aio
from grpc.aio import EOF  # type: ignore[attr-defined]  # missing from grpc-stubs

ns = node_service_pb2
Metadata = Sequence[tuple[str, str]]
HeartbeatCall = aio.StreamStreamCall[hb.HeartbeatRequest, hb.HeartbeatResponse]
WatchCall = aio.UnaryStreamCall[ns.WatchNodesRequest, ns.WatchNodesResponse]
DeploymentWatchCall = aio.UnaryStreamCall[ds.WatchDeploymentsRequest, ds.WatchDeploymentsResponse]

# Matched to the server (`controller.server.server_options`): it refuses client pings more often
# than every 5 s (two strikes close the connection), so 30 s stays well clear of that and still
# finds a dead connection within 40 s. Pings continue on a stream that is open but quiet (long
# heartbeat intervals). gRPC's own reconnect backoff follows the agent's (0.5 s to 15 s).
CHANNEL_OPTIONS: dict[str, int] = {
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.initial_reconnect_backoff_ms": 500,
    "grpc.min_reconnect_backoff_ms": 500,
    "grpc.max_reconnect_backoff_ms": 15_000,
}


class HeartbeatProtocolError(Exception):
    """The controller answered a hello with something other than `SessionStart`."""


class HeartbeatSession:
    """One heartbeat stream of one node, opened by `ControllerClient.heartbeat`.

    Contract:
    - Entering (`async with`, or `await open()`) sends the hello and returns once `SessionStart`
      arrived; `session_id`, `interval_s` and `node_status` are then set. It raises AioRpcError
      (NOT_FOUND for an unknown node), TimeoutError after `open_timeout_s`, or
      HeartbeatProtocolError.
    - `beat()` is for one task at a time and `receive()` for one task at a time; a beating task
      and a receiving task may run concurrently.
    - `close()` ends the request stream (the server sees a clean end of stream, not a
      cancellation) and waits for the server to finish; leaving the `async with` calls it,
      unless the block was cancelled, which cancels the call instead.
    """

    def __init__(
        self,
        start: Callable[[], HeartbeatCall],
        hello: hb.AgentHello,
        *,
        open_timeout_s: float = 10.0,
    ) -> None:
        self._start = start
        self._hello = hello
        self._open_timeout_s = open_timeout_s
        self._call: HeartbeatCall | None = None
        self._sequence = 0
        self.session_id = ""
        self.interval_s = 0.0
        self.node_status: node_pb2.NodeStatus.ValueType = node_pb2.NODE_STATUS_UNSPECIFIED

    @property
    def sequence(self) -> int:
        """The sequence number of the last beat sent (0 before the first)."""
        return self._sequence

    async def open(self) -> HeartbeatSession:
        call = self._start()
        self._call = call
        try:
            async with asyncio.timeout(self._open_timeout_s):
                await call.write(hb.HeartbeatRequest(hello=self._hello))
                first = await call.read()
        except BaseException:
            call.cancel()
            raise
        if not isinstance(first, hb.HeartbeatResponse) or first.WhichOneof("kind") != "session":
            call.cancel()
            raise HeartbeatProtocolError(f"expected SessionStart, got {first!r}")
        self.session_id = first.session.session_id
        self.interval_s = first.session.heartbeat_interval.ToTimedelta().total_seconds()
        self.node_status = first.session.node_status
        return self

    async def beat(
        self, load: hb.NodeLoad | None = None, replicas: Iterable[hb.ReplicaReport] = ()
    ) -> int:
        """Sends the next beat and returns its sequence number (1, 2, ...). Raises AioRpcError if
        the stream failed, asyncio.InvalidStateError if it ended or was closed."""
        self._sequence += 1
        beat = hb.Beat(sequence=self._sequence, load=load, replicas=replicas)
        await self._open_call().write(hb.HeartbeatRequest(beat=beat))
        return self._sequence

    async def receive(self) -> hb.HeartbeatResponse | None:
        """The next message from the controller (an ack, a Reconnect, or a kind this client does
        not know yet), or None once the server ended the stream with OK. Raises AioRpcError if
        it ended with an error."""
        response = await self._open_call().read()
        if isinstance(response, hb.HeartbeatResponse):
            return response
        assert response is EOF, f"unexpected message {response!r}"
        return None

    async def __aiter__(self) -> AsyncIterator[hb.HeartbeatResponse]:
        while (response := await self.receive()) is not None:
            yield response

    async def close(self, timeout_s: float = 5.0) -> grpc.StatusCode:
        """Ends the request stream and waits up to `timeout_s` for the server to end the call;
        returns its status code. After the timeout the call is cancelled (CANCELLED). Safe to
        call twice, and after the stream broke."""
        call = self._call
        if call is None:
            return grpc.StatusCode.OK
        try:
            async with asyncio.timeout(timeout_s):
                # If the call ended meanwhile, its status says how.
                with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                    await call.done_writing()
                code: grpc.StatusCode = await call.code()
                return code
        except TimeoutError:
            call.cancel()
            return grpc.StatusCode.CANCELLED

    def cancel(self) -> None:
        """Cancels the call at once (the server sees a cancellation)."""
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> HeartbeatSession:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self.cancel()
        else:
            await self.close()

    def _open_call(self) -> HeartbeatCall:
        if self._call is None:
            raise asyncio.InvalidStateError("the heartbeat session is not open")
        return self._call


class ControllerClient:
    """A typed client of one controller. Use as `async with`, or call `close()`.

    `target` is "host:port"; `metadata` is sent with every call (e.g. an authorization bearer
    token); `timeout_s` is the deadline of unary calls (None: no deadline); `credentials` makes
    the channel TLS; `options` add to or override `CHANNEL_OPTIONS`."""

    def __init__(
        self,
        target: str,
        *,
        metadata: Metadata = (),
        timeout_s: float | None = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        merged = list({**CHANNEL_OPTIONS, **dict(options)}.items())
        self.target = target
        self._metadata = tuple(metadata)
        self._timeout_s = timeout_s
        self._channel = (
            aio.secure_channel(target, credentials, options=merged)
            if credentials is not None
            else aio.insecure_channel(target, options=merged)
        )
        self._nodes = node_service_pb2_grpc.NodeServiceStub(self._channel)
        self._agents = agent_service_pb2_grpc.AgentServiceStub(self._channel)
        self._deployments = ds_grpc.DeploymentServiceStub(self._channel)

    async def close(self) -> None:
        """Closes the channel; calls still running are cancelled."""
        await self._channel.close(None)

    async def __aenter__(self) -> ControllerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # NodeService

    async def register_node(self, node: node_pb2.Node, *, request_id: str = "") -> node_pb2.Node:
        """Registers `node` (PENDING until its agent streams). A retry with the same
        `request_id` returns the first result."""
        request = ns.RegisterNodeRequest(node=node, request_id=request_id)
        return (await self._nodes.RegisterNode(request, **self._unary())).node

    async def register_agent(
        self, node: node_pb2.Node, *, request_id: str = ""
    ) -> ns.RegisterNodeResponse:
        """`register_node` as an agent needs it: the whole response, whose `agent_token` is the
        token this node's agent streams with (shown only here; empty if the controller issues
        none)."""
        request = ns.RegisterNodeRequest(node=node, request_id=request_id)
        return await self._nodes.RegisterNode(request, **self._unary())

    async def get_node(self, node_id: str) -> node_pb2.Node:
        request = ns.GetNodeRequest(node_id=node_id)
        return (await self._nodes.GetNode(request, **self._unary())).node

    async def list_nodes(
        self, filter: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> ns.ListNodesResponse:
        """One page; pass its `next_page_token` back for the next."""
        request = ns.ListNodesRequest(filter=filter, page_size=page_size, page_token=page_token)
        return await self._nodes.ListNodes(request, **self._unary())

    async def delete_node(self, node_id: str, *, etag: str = "") -> None:
        await self._nodes.DeleteNode(
            ns.DeleteNodeRequest(node_id=node_id, etag=etag), **self._unary()
        )

    async def get_node_stats(self) -> ns.GetNodeStatsResponse:
        return await self._nodes.GetNodeStats(ns.GetNodeStatsRequest(), **self._unary())

    def watch_nodes(self, start_revision: int = 0) -> WatchCall:
        """The live stream of node events: iterate it (`async for`) or `read()` it; `cancel()`
        it when done. It has no deadline."""
        request = ns.WatchNodesRequest(start_revision=start_revision)
        return self._nodes.WatchNodes(request, metadata=self._metadata)

    def heartbeat(
        self,
        node_id: str,
        agent_version: str = "",
        drivers: Sequence[str] = (),
        *,
        open_timeout_s: float = 10.0,
    ) -> HeartbeatSession:
        """A heartbeat stream for `node_id`, opened when entered (see `HeartbeatSession`)."""
        hello = hb.AgentHello(node_id=node_id, agent_version=agent_version, drivers=drivers)

        def start() -> HeartbeatCall:
            return self._agents.Heartbeat(None, metadata=self._metadata)

        return HeartbeatSession(start, hello, open_timeout_s=open_timeout_s)

    # DeploymentService

    async def create_deployment(
        self, deployment: deployment_pb2.Deployment, *, request_id: str = ""
    ) -> deployment_pb2.Deployment:
        request = ds.CreateDeploymentRequest(deployment=deployment, request_id=request_id)
        return (await self._deployments.CreateDeployment(request, **self._unary())).deployment

    async def get_deployment(self, deployment_id: str) -> deployment_pb2.Deployment:
        request = ds.GetDeploymentRequest(deployment_id=deployment_id)
        return (await self._deployments.GetDeployment(request, **self._unary())).deployment

    async def list_deployments(
        self, filter: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> ds.ListDeploymentsResponse:
        """One page; pass its `next_page_token` back for the next."""
        request = ds.ListDeploymentsRequest(
            filter=filter, page_size=page_size, page_token=page_token
        )
        return await self._deployments.ListDeployments(request, **self._unary())

    async def update_deployment(
        self, deployment: deployment_pb2.Deployment, update_mask: Sequence[str]
    ) -> deployment_pb2.Deployment:
        """Changes the fields named in `update_mask` (e.g. ["replicas"]) of `deployment.id`;
        conditional on `deployment.etag` if it is set."""
        request = ds.UpdateDeploymentRequest(deployment=deployment)
        request.update_mask.paths.extend(update_mask)
        return (await self._deployments.UpdateDeployment(request, **self._unary())).deployment

    def watch_deployments(self, start_revision: int = 0) -> DeploymentWatchCall:
        """The live stream of deployment events, like `watch_nodes`."""
        request = ds.WatchDeploymentsRequest(start_revision=start_revision)
        return self._deployments.WatchDeployments(request, metadata=self._metadata)

    async def delete_deployment(self, deployment_id: str, *, etag: str = "") -> None:
        request = ds.DeleteDeploymentRequest(deployment_id=deployment_id, etag=etag)
        await self._deployments.DeleteDeployment(request, **self._unary())

    async def get_deployment_stats(self) -> ds.GetDeploymentStatsResponse:
        request = ds.GetDeploymentStatsRequest()
        return await self._deployments.GetDeploymentStats(request, **self._unary())

    def _unary(self) -> dict[str, Any]:
        return {"timeout": self._timeout_s, "metadata": self._metadata}
