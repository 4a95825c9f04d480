"""What the sync and asyncio clients share: requests, the event kinds of each watch, the
idempotency key of creates. Private: the clients are the interface."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from automator67.v1 import deployment_pb2, node_pb2
from automator67.v1 import deployment_service_pb2 as ds
from automator67.v1 import node_service_pb2 as ns
from automator67.watch import EventKinds

NODE_EVENTS = EventKinds(
    added=ns.NODE_EVENT_TYPE_ADDED, synced=ns.NODE_EVENT_TYPE_SYNCED, reset=ns.NODE_EVENT_TYPE_RESET
)
DEPLOYMENT_EVENTS = EventKinds(
    added=ds.DEPLOYMENT_EVENT_TYPE_ADDED,
    synced=ds.DEPLOYMENT_EVENT_TYPE_SYNCED,
    reset=ds.DEPLOYMENT_EVENT_TYPE_RESET,
)


def node_reset() -> ns.WatchNodesResponse:
    return ns.WatchNodesResponse(type=ns.NODE_EVENT_TYPE_RESET)


def deployment_reset() -> ds.WatchDeploymentsResponse:
    return ds.WatchDeploymentsResponse(type=ds.DEPLOYMENT_EVENT_TYPE_RESET)


def request_id(given: str | None) -> str:
    """The idempotency key of a create (AIP-155): the caller's, else a new UUID (as Google's
    client libraries fill in UUID4 request ids, AIP-4235), so that retrying the create after a
    lost answer cannot create twice. "" sends none (and the create is not retried)."""
    return str(uuid.uuid4()) if given is None else given


def update_request(
    deployment: deployment_pb2.Deployment, update_mask: Sequence[str]
) -> ds.UpdateDeploymentRequest:
    request = ds.UpdateDeploymentRequest(deployment=deployment)
    request.update_mask.paths.extend(update_mask)
    return request


def rollback_request(
    deployment_id: str, template_generation: int, etag: str
) -> ds.UpdateDeploymentRequest:
    return ds.UpdateDeploymentRequest(
        deployment=deployment_pb2.Deployment(id=deployment_id, etag=etag),
        rollback=ds.Rollback(template_generation=template_generation),
    )


def pause_request(deployment_id: str, paused: bool) -> ds.UpdateDeploymentRequest:
    return update_request(deployment_pb2.Deployment(id=deployment_id, paused=paused), ["paused"])


def rollout_settled(dep: deployment_pb2.Deployment) -> bool:
    """The scheduler has seen the latest spec and its rollout ended (or is paused), like
    `kubectl rollout status`."""
    if dep.observed_generation < dep.generation:
        return False
    if dep.paused or not dep.rollout_history:
        return True
    return dep.rollout_history[-1].outcome != deployment_pb2.ROLLOUT_OUTCOME_PROGRESSING


def rollout_done(
    event: ds.WatchDeploymentsResponse, deployment_id: str
) -> deployment_pb2.Deployment | None:
    """What `wait_for_rollout` (sync and async) makes of one watch event: the deployment once
    its rollout settled (`rollout_settled`), else None; LookupError if it was deleted."""
    dep = event.deployment
    if dep.id != deployment_id:
        return None
    if event.type == ds.DEPLOYMENT_EVENT_TYPE_DELETED:
        raise LookupError(f"deployment {deployment_id!r} was deleted while its rollout ran")
    if event.type == ds.DEPLOYMENT_EVENT_TYPE_RESET:
        return None
    return dep if rollout_settled(dep) else None


def node_update_request(node: node_pb2.Node, update_mask: Sequence[str]) -> ns.UpdateNodeRequest:
    request = ns.UpdateNodeRequest(node=node)
    request.update_mask.paths.extend(update_mask)
    return request


def drain_request(node_id: str, deadline_s: float | None) -> ns.UpdateNodeRequest:
    """Starts a drain of `node_id` (a new deadline if one runs); None: the server's default."""
    drain = node_pb2.NodeDrain()
    if deadline_s is not None:
        drain.timeout.FromNanoseconds(round(deadline_s * 1e9))
    return node_update_request(node_pb2.Node(id=node_id, drain=drain), ["drain"])


def cordon_request(node_id: str, unschedulable: bool) -> ns.UpdateNodeRequest:
    node = node_pb2.Node(id=node_id, unschedulable=unschedulable)
    # Uncordoning ends a drain too (the server refuses an uncordon while one runs otherwise).
    return node_update_request(
        node, ["unschedulable"] if unschedulable else ["drain", "unschedulable"]
    )
