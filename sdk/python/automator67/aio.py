"""The asyncio client of the controller's operator API; the same methods as `client.Client`,
awaited (List methods return async iterators, watches async resuming iterators).

    from automator67.aio import AsyncClient

    async with AsyncClient("127.0.0.1:50051", token=TOKEN) as client:
        node = (await client.register_node(spec)).node
        async for ready in client.list_nodes("status = READY"):
            ...
        async with client.watch_nodes() as watch:
            async for event in watch:
                ...

One client belongs to one event loop (grpc.aio's rule)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, TypeVar

import grpc
from grpc import aio

from automator67 import _methods
from automator67.connection import (
    TLS,
    Metadata,
    Token,
    call_metadata,
    channel_credentials,
    channel_options,
)
from automator67.errors import from_rpc_error
from automator67.paging import AsyncPager
from automator67.retry import DEFAULT_RETRY, NO_RETRY, WATCH_RESUME, Retry
from automator67.v1 import deployment_pb2, node_pb2
from automator67.v1 import deployment_service_pb2 as ds
from automator67.v1 import deployment_service_pb2_grpc as ds_grpc
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc as ns_grpc
from automator67.watch import AsyncWatch

Resp = TypeVar("Resp")

NodePager = AsyncPager[ns.ListNodesResponse, node_pb2.Node]
DeploymentPager = AsyncPager[ds.ListDeploymentsResponse, deployment_pb2.Deployment]


class AsyncClient:
    """A client of one controller; `await close()` it, or use it as `async with`. The
    arguments are those of `automator67.Client`."""

    def __init__(
        self,
        target: str,
        *,
        token: Token | None = None,
        tls: TLS | bool | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata = (),
        timeout_s: float = 30.0,
        retry: Retry = DEFAULT_RETRY,
        watch_resume: Retry = WATCH_RESUME,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        creds = channel_credentials(tls, credentials)
        opts = channel_options(options)
        self.target = target
        self._channel = (
            aio.secure_channel(target, creds, options=opts)
            if creds is not None
            else aio.insecure_channel(target, options=opts)
        )
        self._token = token
        self._metadata = tuple(metadata)
        self._timeout_s = timeout_s
        self._retry = retry
        self._watch_resume = watch_resume
        self._nodes = ns_grpc.NodeServiceStub(self._channel)
        self._deployments = ds_grpc.DeploymentServiceStub(self._channel)

    @property
    def channel(self) -> aio.Channel:
        """The underlying channel (for other services, such as grpc.health.v1)."""
        return self._channel

    async def close(self) -> None:
        """Closes the channel; calls still running are cancelled."""
        await self._channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # NodeService

    async def register_node(
        self, node: node_pb2.Node, *, request_id: str | None = None, timeout_s: float | None = None
    ) -> ns.RegisterNodeResponse:
        """Registers `node`; see `Client.register_node`."""
        key = _methods.request_id(request_id)
        request = ns.RegisterNodeRequest(node=node, request_id=key)
        return await self._call(self._nodes.RegisterNode, request, bool(key), timeout_s)

    async def get_node(self, node_id: str, *, timeout_s: float | None = None) -> node_pb2.Node:
        request = ns.GetNodeRequest(node_id=node_id)
        return (await self._call(self._nodes.GetNode, request, True, timeout_s)).node

    def list_nodes(
        self, filter: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> NodePager:
        """Every node matching `filter`, page by page as the iteration goes."""

        async def fetch(token: str) -> ns.ListNodesResponse:
            request = ns.ListNodesRequest(filter=filter, page_size=page_size, page_token=token)
            return await self._call(self._nodes.ListNodes, request, True, None)

        return AsyncPager(fetch, lambda page: page.nodes, page_token)

    async def delete_node(
        self, node_id: str, *, etag: str = "", timeout_s: float | None = None
    ) -> None:
        request = ns.DeleteNodeRequest(node_id=node_id, etag=etag)
        await self._call(self._nodes.DeleteNode, request, False, timeout_s)

    async def update_node(
        self,
        node: node_pb2.Node,
        update_mask: Sequence[str],
        *,
        timeout_s: float | None = None,
    ) -> node_pb2.Node:
        """See `Client.update_node`."""
        request = _methods.node_update_request(node, update_mask)
        idempotent = not node.etag
        return (await self._call(self._nodes.UpdateNode, request, idempotent, timeout_s)).node

    async def cordon_node(self, node_id: str, *, timeout_s: float | None = None) -> node_pb2.Node:
        """See `Client.cordon_node`."""
        request = _methods.cordon_request(node_id, True)
        return (await self._call(self._nodes.UpdateNode, request, True, timeout_s)).node

    async def uncordon_node(self, node_id: str, *, timeout_s: float | None = None) -> node_pb2.Node:
        """See `Client.uncordon_node`."""
        request = _methods.cordon_request(node_id, False)
        return (await self._call(self._nodes.UpdateNode, request, True, timeout_s)).node

    async def drain_node(
        self, node_id: str, *, deadline_s: float | None = None, timeout_s: float | None = None
    ) -> node_pb2.Node:
        """See `Client.drain_node`."""
        request = _methods.drain_request(node_id, deadline_s)
        return (await self._call(self._nodes.UpdateNode, request, False, timeout_s)).node

    async def cancel_node_drain(
        self, node_id: str, *, timeout_s: float | None = None
    ) -> node_pb2.Node:
        """See `Client.cancel_node_drain`."""
        request = _methods.node_update_request(node_pb2.Node(id=node_id), ["drain"])
        return (await self._call(self._nodes.UpdateNode, request, True, timeout_s)).node

    async def get_node_stats(self, *, timeout_s: float | None = None) -> ns.GetNodeStatsResponse:
        request = ns.GetNodeStatsRequest()
        return await self._call(self._nodes.GetNodeStats, request, True, timeout_s)

    def watch_nodes(self, start_revision: int = 0) -> AsyncWatch[ns.WatchNodesResponse]:
        """Node events, resuming after a broken stream; see `Client.watch_nodes`."""

        def start(revision: int) -> Any:
            request = ns.WatchNodesRequest(start_revision=revision)
            return self._nodes.WatchNodes(request, metadata=self._call_metadata())

        return AsyncWatch(
            start, start_revision, _methods.NODE_EVENTS, _methods.node_reset, self._watch_resume
        )

    # DeploymentService

    async def create_deployment(
        self,
        deployment: deployment_pb2.Deployment,
        *,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> deployment_pb2.Deployment:
        key = _methods.request_id(request_id)
        request = ds.CreateDeploymentRequest(deployment=deployment, request_id=key)
        method = self._deployments.CreateDeployment
        return (await self._call(method, request, bool(key), timeout_s)).deployment

    async def get_deployment(
        self, deployment_id: str, *, timeout_s: float | None = None
    ) -> deployment_pb2.Deployment:
        request = ds.GetDeploymentRequest(deployment_id=deployment_id)
        method = self._deployments.GetDeployment
        return (await self._call(method, request, True, timeout_s)).deployment

    def list_deployments(
        self, filter: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> DeploymentPager:
        async def fetch(token: str) -> ds.ListDeploymentsResponse:
            request = ds.ListDeploymentsRequest(
                filter=filter, page_size=page_size, page_token=token
            )
            return await self._call(self._deployments.ListDeployments, request, True, None)

        return AsyncPager(fetch, lambda page: page.deployments, page_token)

    async def update_deployment(
        self,
        deployment: deployment_pb2.Deployment,
        update_mask: Sequence[str],
        *,
        timeout_s: float | None = None,
    ) -> deployment_pb2.Deployment:
        """See `Client.update_deployment`."""
        request = _methods.update_request(deployment, update_mask)
        method = self._deployments.UpdateDeployment
        return (await self._call(method, request, False, timeout_s)).deployment

    async def rollback_deployment(
        self,
        deployment_id: str,
        template_generation: int = 0,
        *,
        etag: str = "",
        timeout_s: float | None = None,
    ) -> deployment_pb2.Deployment:
        """See `Client.rollback_deployment`."""
        request = _methods.rollback_request(deployment_id, template_generation, etag)
        method = self._deployments.UpdateDeployment
        return (await self._call(method, request, False, timeout_s)).deployment

    async def pause_deployment(
        self, deployment_id: str, *, timeout_s: float | None = None
    ) -> deployment_pb2.Deployment:
        """See `Client.pause_deployment`."""
        request = _methods.pause_request(deployment_id, True)
        return (
            await self._call(self._deployments.UpdateDeployment, request, True, timeout_s)
        ).deployment

    async def resume_deployment(
        self, deployment_id: str, *, timeout_s: float | None = None
    ) -> deployment_pb2.Deployment:
        """See `Client.resume_deployment`."""
        request = _methods.pause_request(deployment_id, False)
        return (
            await self._call(self._deployments.UpdateDeployment, request, True, timeout_s)
        ).deployment

    async def wait_for_rollout(
        self, deployment_id: str, *, timeout_s: float = 600.0
    ) -> deployment_pb2.Deployment:
        """Follows the deployment (a watch, no polling) until the scheduler has seen its latest
        spec and its rollout ended: COMPLETE, or rolled back and the rollback ended (its
        `rollout_history` says which), or it is paused. TimeoutError after `timeout_s`;
        LookupError if it is deleted meanwhile."""
        watch = self.watch_deployments()
        try:
            async with asyncio.timeout(timeout_s):
                async for event in watch:
                    done = _methods.rollout_done(event, deployment_id)
                    if done is not None:
                        return done
        finally:
            watch.cancel()
        raise LookupError(f"the watch of deployment {deployment_id!r} ended")

    async def delete_deployment(
        self, deployment_id: str, *, etag: str = "", timeout_s: float | None = None
    ) -> deployment_pb2.Deployment:
        """Starts deleting; returns the deployment in its STOPPING state (AIP-135)."""
        request = ds.DeleteDeploymentRequest(deployment_id=deployment_id, etag=etag)
        method = self._deployments.DeleteDeployment
        return (await self._call(method, request, False, timeout_s)).deployment

    async def get_deployment_stats(
        self, *, timeout_s: float | None = None
    ) -> ds.GetDeploymentStatsResponse:
        request = ds.GetDeploymentStatsRequest()
        return await self._call(self._deployments.GetDeploymentStats, request, True, timeout_s)

    def watch_deployments(self, start_revision: int = 0) -> AsyncWatch[ds.WatchDeploymentsResponse]:
        def start(revision: int) -> Any:
            request = ds.WatchDeploymentsRequest(start_revision=revision)
            return self._deployments.WatchDeployments(request, metadata=self._call_metadata())

        return AsyncWatch(
            start,
            start_revision,
            _methods.DEPLOYMENT_EVENTS,
            _methods.deployment_reset,
            self._watch_resume,
        )

    # Plumbing

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        return call_metadata(self._token, self._metadata)

    async def _call(
        self,
        method: Callable[..., Awaitable[Resp]],
        request: Any,
        idempotent: bool,
        timeout_s: float | None,
    ) -> Resp:
        """One unary call, retried per the client's policy if `idempotent`; errors typed."""
        timeout = self._timeout_s if timeout_s is None else timeout_s
        delays = (self._retry if idempotent else NO_RETRY).delays(random.random)
        while True:
            try:
                return await method(request, timeout=timeout, metadata=self._call_metadata())
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                delay = next(delays, None) if error.code in self._retry.codes else None
                if delay is None:
                    raise error from rpc_error
            await asyncio.sleep(delay)
