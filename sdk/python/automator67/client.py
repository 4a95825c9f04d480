"""The synchronous client of the controller's operator API: NodeService and DeploymentService.

    from automator67 import Client, NotFoundError
    from automator67.v1 import node_pb2

    with Client("127.0.0.1:50051", token=TOKEN) as client:
        node = client.register_node(node_pb2.Node(provider="render", endpoint="https://...",
            capabilities=node_pb2.Capabilities(cpu_cores=4, memory_gb=8))).node
        for ready in client.list_nodes("status = READY"):   # every page
            print(ready.id)
        for event in client.watch_nodes():                   # resumes after a broken stream
            ...

Methods take and return the generated messages of `automator67.v1` and raise the typed errors
of `automator67.errors`. Every unary call has a deadline (`timeout_s`, per attempt); reads and
creates are retried on UNAVAILABLE (`retry.py`). Thread-safe: one client may serve many threads.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar

import grpc

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
from automator67.paging import Pager
from automator67.retry import DEFAULT_RETRY, NO_RETRY, WATCH_RESUME, Retry
from automator67.v1 import deployment_pb2, node_pb2
from automator67.v1 import deployment_service_pb2 as ds
from automator67.v1 import deployment_service_pb2_grpc as ds_grpc
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc as ns_grpc
from automator67.watch import Watch

Req = TypeVar("Req")
Resp = TypeVar("Resp")

NodePager = Pager[ns.ListNodesResponse, node_pb2.Node]
DeploymentPager = Pager[ds.ListDeploymentsResponse, deployment_pb2.Deployment]


class Client:
    """A client of one controller; `close()` it, or use it as a context manager.

    `target` is "host:port" (or any gRPC target, e.g. `dns:///controllers:50051`); `token` is
    the bearer token sent with every call (or a callable returning it, asked each call); `tls`
    is a `TLS` (CA, client certificate and key), True for the system's roots, or None for
    plaintext (`credentials` overrides it with ready channel credentials); `metadata` is sent
    with every call; `timeout_s` is each unary attempt's deadline; `retry` says how reads and
    creates are retried, `watch_resume` how watches resume; `options` add to or override the
    channel options (`connection.CHANNEL_OPTIONS`)."""

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
            grpc.secure_channel(target, creds, options=opts)
            if creds is not None
            else grpc.insecure_channel(target, options=opts)
        )
        self._token = token
        self._metadata = tuple(metadata)
        self._timeout_s = timeout_s
        self._retry = retry
        self._watch_resume = watch_resume
        self._nodes = ns_grpc.NodeServiceStub(self._channel)
        self._deployments = ds_grpc.DeploymentServiceStub(self._channel)

    def close(self) -> None:
        """Closes the channel; calls still running are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # NodeService

    def register_node(
        self, node: node_pb2.Node, *, request_id: str | None = None, timeout_s: float | None = None
    ) -> ns.RegisterNodeResponse:
        """Registers `node` (PENDING until its agent streams). The response carries the node
        and its `agent_token`, shown only here. A retry with the same `request_id` returns the
        first node (see `_methods.request_id` for the default)."""
        key = _methods.request_id(request_id)
        request = ns.RegisterNodeRequest(node=node, request_id=key)
        return self._call(self._nodes.RegisterNode, request, bool(key), timeout_s)

    def get_node(self, node_id: str, *, timeout_s: float | None = None) -> node_pb2.Node:
        request = ns.GetNodeRequest(node_id=node_id)
        return self._call(self._nodes.GetNode, request, True, timeout_s).node

    def list_nodes(
        self, filter: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> NodePager:
        """Every node matching `filter` (AIP-160, e.g. `status = READY AND region = "eu"`),
        fetched `page_size` at a time (0: the controller's default) as the iteration goes."""

        def fetch(token: str) -> ns.ListNodesResponse:
            request = ns.ListNodesRequest(filter=filter, page_size=page_size, page_token=token)
            return self._call(self._nodes.ListNodes, request, True, None)

        return Pager(fetch, lambda page: page.nodes, page_token)

    def delete_node(self, node_id: str, *, etag: str = "", timeout_s: float | None = None) -> None:
        """Removes the node; with `etag`, only if it is still that version (else AbortedError,
        reason ETAG_MISMATCH, `metadata["current_etag"]`)."""
        request = ns.DeleteNodeRequest(node_id=node_id, etag=etag)
        self._call(self._nodes.DeleteNode, request, False, timeout_s)

    def update_node(
        self,
        node: node_pb2.Node,
        update_mask: Sequence[str],
        *,
        timeout_s: float | None = None,
    ) -> node_pb2.Node:
        """Changes the fields named in `update_mask` (labels, unschedulable, drain) of
        `node.id`; only if its etag is still `node.etag`, when that is set (a change without
        one sets absolute values, so it is retried like a read)."""
        request = _methods.node_update_request(node, update_mask)
        idempotent = not node.etag
        return self._call(self._nodes.UpdateNode, request, idempotent, timeout_s).node

    def cordon_node(self, node_id: str, *, timeout_s: float | None = None) -> node_pb2.Node:
        """Marks the node unschedulable: nothing new is placed on it; its replicas stay."""
        request = _methods.cordon_request(node_id, True)
        return self._call(self._nodes.UpdateNode, request, True, timeout_s).node

    def uncordon_node(self, node_id: str, *, timeout_s: float | None = None) -> node_pb2.Node:
        """Makes the node schedulable again, cancelling its drain if one runs."""
        request = _methods.cordon_request(node_id, False)
        return self._call(self._nodes.UpdateNode, request, True, timeout_s).node

    def drain_node(
        self, node_id: str, *, deadline_s: float | None = None, timeout_s: float | None = None
    ) -> node_pb2.Node:
        """Cordons the node and moves its replicas elsewhere, each replacement running before
        the replica it replaces stops; after `deadline_s` (default: the server's, 1 hour) the
        rest are stopped. Progress: the node's `drain` (watch_nodes shows it change)."""
        request = _methods.drain_request(node_id, deadline_s)
        return self._call(self._nodes.UpdateNode, request, False, timeout_s).node

    def cancel_node_drain(self, node_id: str, *, timeout_s: float | None = None) -> node_pb2.Node:
        """Stops moving the node's replicas; the node stays cordoned."""
        request = _methods.node_update_request(node_pb2.Node(id=node_id), ["drain"])
        return self._call(self._nodes.UpdateNode, request, True, timeout_s).node

    def get_node_stats(self, *, timeout_s: float | None = None) -> ns.GetNodeStatsResponse:
        return self._call(self._nodes.GetNodeStats, ns.GetNodeStatsRequest(), True, timeout_s)

    def watch_nodes(self, start_revision: int = 0) -> Watch[ns.WatchNodesResponse]:
        """Node events: the current state (ADDED..., SYNCED) or, from `start_revision`, every
        change after it; then live changes. Resumes after a broken stream (`watch.py`)."""

        def start(revision: int) -> Any:
            request = ns.WatchNodesRequest(start_revision=revision)
            return self._nodes.WatchNodes(request, metadata=self._call_metadata())

        return Watch(
            start, start_revision, _methods.NODE_EVENTS, _methods.node_reset, self._watch_resume
        )

    # DeploymentService

    def create_deployment(
        self,
        deployment: deployment_pb2.Deployment,
        *,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> deployment_pb2.Deployment:
        key = _methods.request_id(request_id)
        request = ds.CreateDeploymentRequest(deployment=deployment, request_id=key)
        response = self._call(self._deployments.CreateDeployment, request, bool(key), timeout_s)
        return response.deployment

    def get_deployment(
        self, deployment_id: str, *, timeout_s: float | None = None
    ) -> deployment_pb2.Deployment:
        request = ds.GetDeploymentRequest(deployment_id=deployment_id)
        return self._call(self._deployments.GetDeployment, request, True, timeout_s).deployment

    def list_deployments(
        self, filter: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> DeploymentPager:
        """Every deployment matching `filter`, as `list_nodes`."""

        def fetch(token: str) -> ds.ListDeploymentsResponse:
            request = ds.ListDeploymentsRequest(
                filter=filter, page_size=page_size, page_token=token
            )
            return self._call(self._deployments.ListDeployments, request, True, None)

        return Pager(fetch, lambda page: page.deployments, page_token)

    def update_deployment(
        self,
        deployment: deployment_pb2.Deployment,
        update_mask: Sequence[str],
        *,
        timeout_s: float | None = None,
    ) -> deployment_pb2.Deployment:
        """Changes the fields named in `update_mask` (e.g. ["replicas"]) of `deployment.id`;
        only if its etag is still `deployment.etag`, when that is set."""
        request = _methods.update_request(deployment, update_mask)
        response = self._call(self._deployments.UpdateDeployment, request, False, timeout_s)
        return response.deployment

    def rollback_deployment(
        self,
        deployment_id: str,
        template_generation: int = 0,
        *,
        etag: str = "",
        timeout_s: float | None = None,
    ) -> deployment_pb2.Deployment:
        """Rolls the template back to `template_generation` (0: the last one that completed
        before the current): a new generation, rolled out like any change. INVALID_ARGUMENT if
        the history no longer holds it; FAILED_PRECONDITION while paused."""
        request = _methods.rollback_request(deployment_id, template_generation, etag)
        response = self._call(self._deployments.UpdateDeployment, request, False, timeout_s)
        return response.deployment

    def pause_deployment(
        self, deployment_id: str, *, timeout_s: float | None = None
    ) -> deployment_pb2.Deployment:
        """Stops its rollout where it is: replicas that are moving finish, no others start."""
        request = _methods.pause_request(deployment_id, True)
        return self._call(self._deployments.UpdateDeployment, request, True, timeout_s).deployment

    def resume_deployment(
        self, deployment_id: str, *, timeout_s: float | None = None
    ) -> deployment_pb2.Deployment:
        """Resumes a paused rollout (its progress deadline counts from now)."""
        request = _methods.pause_request(deployment_id, False)
        return self._call(self._deployments.UpdateDeployment, request, True, timeout_s).deployment

    def wait_for_rollout(
        self, deployment_id: str, *, timeout_s: float = 600.0
    ) -> deployment_pb2.Deployment:
        """Follows the deployment (a watch, no polling) until the scheduler has seen its latest
        spec and its rollout ended: COMPLETE, or rolled back and the rollback ended (its
        `rollout_history` says which), or it is paused. TimeoutError after `timeout_s`;
        LookupError if it is deleted meanwhile."""
        watch = self.watch_deployments()
        timer = threading.Timer(timeout_s, watch.close)  # the watch's iteration then ends
        timer.daemon = True
        timer.start()
        try:
            for event in watch:
                done = _methods.rollout_done(event, deployment_id)
                if done is not None:
                    return done
        finally:
            timer.cancel()
            watch.close()
        # A Watch ends only when closed (errors it does not resume from are raised).
        raise TimeoutError(f"the rollout of {deployment_id!r} did not end in {timeout_s}s")

    def delete_deployment(
        self, deployment_id: str, *, etag: str = "", timeout_s: float | None = None
    ) -> deployment_pb2.Deployment:
        """Starts deleting the deployment; returns it in its STOPPING state (AIP-135): it is
        gone once its replicas have stopped (a DELETED watch event says when)."""
        request = ds.DeleteDeploymentRequest(deployment_id=deployment_id, etag=etag)
        response = self._call(self._deployments.DeleteDeployment, request, False, timeout_s)
        return response.deployment

    def get_deployment_stats(
        self, *, timeout_s: float | None = None
    ) -> ds.GetDeploymentStatsResponse:
        request = ds.GetDeploymentStatsRequest()
        return self._call(self._deployments.GetDeploymentStats, request, True, timeout_s)

    def watch_deployments(self, start_revision: int = 0) -> Watch[ds.WatchDeploymentsResponse]:
        """Deployment events, as `watch_nodes`."""

        def start(revision: int) -> Any:
            request = ds.WatchDeploymentsRequest(start_revision=revision)
            return self._deployments.WatchDeployments(request, metadata=self._call_metadata())

        return Watch(
            start,
            start_revision,
            _methods.DEPLOYMENT_EVENTS,
            _methods.deployment_reset,
            self._watch_resume,
        )

    # Plumbing

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        return call_metadata(self._token, self._metadata)

    def _call(
        self,
        method: Callable[..., Resp],
        request: Any,
        idempotent: bool,
        timeout_s: float | None,
    ) -> Resp:
        """One unary call, retried per the client's policy if `idempotent`; errors typed."""
        timeout = self._timeout_s if timeout_s is None else timeout_s
        delays = (self._retry if idempotent else NO_RETRY).delays(random.random)
        while True:
            try:
                return method(request, timeout=timeout, metadata=self._call_metadata())
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                delay = next(delays, None) if error.code in self._retry.codes else None
                if delay is None:
                    raise error from rpc_error
            time.sleep(delay)
