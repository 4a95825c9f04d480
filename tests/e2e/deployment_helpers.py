"""Waiting for the scheduler: deployments change after they are created (the scheduler places
them or says why it cannot), so tests that compare whole messages first wait, on the
WatchDeployments stream, until every deployment has been through a scheduling pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from automator67.v1 import deployment_pb2, deployment_service_pb2_grpc
from automator67.v1 import deployment_service_pb2 as pb
from grpc import aio

if TYPE_CHECKING:
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub

View = dict[str, deployment_pb2.Deployment]
NEW_REASON = "waiting to be scheduled"  # the reason of a deployment no pass has seen yet


def users_part(dep: deployment_pb2.Deployment) -> deployment_pb2.Deployment:
    """The deployment without what the scheduler keeps changing (status, placements, etag)."""
    kept = deployment_pb2.Deployment()
    kept.CopyFrom(dep)
    for field in (
        "status",
        "status_reason",
        "status_reason_code",
        "etag",
        "update_time",
        "replica_statuses",
        "history",
        "observed_generation",
        "updated_replicas",
        "ready_replicas",
        "available_replicas",
        "rollout_history",
    ):
        kept.ClearField(field)
    del kept.node_ids[:]
    return kept


def scheduled(dep: deployment_pb2.Deployment) -> bool:
    """The scheduler has been through this deployment at least once."""
    return dep.status_reason != NEW_REASON and len(dep.replica_statuses) >= dep.replicas


async def wait_for_view(
    stub: DeploymentServiceAsyncStub, done: Callable[[View], bool], timeout_s: float = 15.0
) -> View:
    """The deployments, as WatchDeployments shows them, once `done(view)` holds."""
    view: View = {}
    call = stub.WatchDeployments(pb.WatchDeploymentsRequest())
    synced = False

    async def follow() -> View:
        nonlocal synced
        async for event in call:
            if event.type in (pb.DEPLOYMENT_EVENT_TYPE_ADDED, pb.DEPLOYMENT_EVENT_TYPE_CHANGED):
                view[event.deployment.id] = event.deployment
            elif event.type == pb.DEPLOYMENT_EVENT_TYPE_DELETED:
                view.pop(event.deployment.id, None)
            elif event.type == pb.DEPLOYMENT_EVENT_TYPE_RESET:
                view.clear()
                synced = False
            elif event.type == pb.DEPLOYMENT_EVENT_TYPE_SYNCED:
                synced = True
            if synced and done(view):
                return view
        raise AssertionError("WatchDeployments ended")

    try:
        return await asyncio.wait_for(follow(), timeout_s)
    finally:
        call.cancel()


async def settled(channel: aio.Channel) -> View:
    """Every deployment, once each has been through a scheduling pass."""
    stub = deployment_service_pb2_grpc.DeploymentServiceStub(channel)
    return await wait_for_view(stub, lambda view: all(scheduled(d) for d in view.values()))


async def gone(stub: DeploymentServiceAsyncStub, deployment_id: str) -> None:
    """Waits until a deleted deployment's replicas stopped and it was removed."""
    await wait_for_view(stub, lambda view: deployment_id not in view)
