"""A DELETED watch event carries the resource's last state (and its last etag), whether the
watcher saw it live or replays it from a revision after a break: SDKs rely on one shape."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from automator67.v1 import deployment_pb2
from automator67.v1 import deployment_service_pb2 as pb

from .deployment_helpers import gone
from .heartbeat_helpers import WAIT_S
from .seed import web_deployment

if TYPE_CHECKING:
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub

DELETED = pb.DEPLOYMENT_EVENT_TYPE_DELETED
SYNCED = pb.DEPLOYMENT_EVENT_TYPE_SYNCED


async def events_until_deleted(
    stub: DeploymentServiceAsyncStub,
    start_revision: int,
    deployment_id: str,
    synced: asyncio.Event | None = None,
) -> deployment_pb2.Deployment:
    """Follows a watch from `start_revision` until the deployment's DELETED event; sets
    `synced` when the watch is caught up (what follows is live)."""
    call = stub.WatchDeployments(pb.WatchDeploymentsRequest(start_revision=start_revision))
    try:
        async with asyncio.timeout(WAIT_S):
            async for event in call:
                if event.type == SYNCED and synced is not None:
                    synced.set()
                if event.type == DELETED and event.deployment.id == deployment_id:
                    return event.deployment
    finally:
        call.cancel()
    raise AssertionError("the watch ended before the DELETED event")


async def test_a_replayed_deleted_event_carries_the_last_state_as_the_live_one_does(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    first = await deployment_stub.CreateDeployment(
        pb.CreateDeploymentRequest(deployment=web_deployment("before"))
    )
    start = int(first.deployment.etag)
    created = (
        await deployment_stub.CreateDeployment(
            pb.CreateDeploymentRequest(deployment=web_deployment("doomed"))
        )
    ).deployment
    caught_up = asyncio.Event()
    live = asyncio.create_task(events_until_deleted(deployment_stub, start, created.id, caught_up))
    await asyncio.wait_for(caught_up.wait(), WAIT_S)
    stopping = (
        await deployment_stub.DeleteDeployment(pb.DeleteDeploymentRequest(deployment_id=created.id))
    ).deployment
    await gone(deployment_stub, created.id)
    seen_live = await live

    replayed = await events_until_deleted(deployment_stub, start, created.id)

    assert seen_live.name == "doomed"
    assert seen_live.status == deployment_pb2.DEPLOYMENT_STATUS_STOPPING
    assert replayed == seen_live
    assert replayed.etag != created.etag  # the last state, not the first
    assert stopping.name == replayed.name
