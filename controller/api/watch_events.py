"""Watch response messages of nodes and deployments, built from registry events."""

from __future__ import annotations

from typing import Any

from automator67.v1 import deployment_pb2, node_pb2
from automator67.v1 import deployment_service_pb2 as dpb
from automator67.v1 import node_service_pb2 as npb

from controller.api.convert import deployment_to_pb, node_status_pb, node_to_pb
from controller.models import Deployment, Node
from controller.registry.events import Event, EventType


class NodeEvents:
    def event(self, event: Event[Any]) -> npb.WatchNodesResponse:
        node: Node = event.resource
        previous: Node | None = event.previous
        response = npb.WatchNodesResponse(node=node_to_pb(node), revision=event.revision)
        if event.type is EventType.ADDED:
            response.type = npb.NODE_EVENT_TYPE_ADDED
        elif event.type is EventType.DELETED:
            response.type = npb.NODE_EVENT_TYPE_DELETED
        elif previous is not None and previous.status is not node.status:
            response.type = npb.NODE_EVENT_TYPE_STATUS_CHANGED
            response.previous_status = node_status_pb(previous.status)
        else:
            response.type = npb.NODE_EVENT_TYPE_CHANGED
        return response

    def added(self, node: Node) -> npb.WatchNodesResponse:
        return npb.WatchNodesResponse(
            type=npb.NODE_EVENT_TYPE_ADDED, node=node_to_pb(node), revision=node.revision
        )

    def changed(self, node: Node, revision: int) -> npb.WatchNodesResponse:
        return npb.WatchNodesResponse(
            type=npb.NODE_EVENT_TYPE_CHANGED, node=node_to_pb(node), revision=revision
        )

    def deleted(self, node_id: str, revision: int, last: Node | None) -> npb.WatchNodesResponse:
        node = node_to_pb(last) if last is not None else node_pb2.Node(id=node_id)
        return npb.WatchNodesResponse(
            type=npb.NODE_EVENT_TYPE_DELETED, node=node, revision=revision
        )

    def synced(self, revision: int) -> npb.WatchNodesResponse:
        return npb.WatchNodesResponse(type=npb.NODE_EVENT_TYPE_SYNCED, revision=revision)

    def reset(self, revision: int) -> npb.WatchNodesResponse:
        return npb.WatchNodesResponse(type=npb.NODE_EVENT_TYPE_RESET, revision=revision)


_DEPLOYMENT_EVENT_TYPES = {
    EventType.ADDED: dpb.DEPLOYMENT_EVENT_TYPE_ADDED,
    EventType.CHANGED: dpb.DEPLOYMENT_EVENT_TYPE_CHANGED,
    EventType.DELETED: dpb.DEPLOYMENT_EVENT_TYPE_DELETED,
}


class DeploymentEvents:
    def event(self, event: Event[Any]) -> dpb.WatchDeploymentsResponse:
        return dpb.WatchDeploymentsResponse(
            type=_DEPLOYMENT_EVENT_TYPES[event.type],
            deployment=deployment_to_pb(event.resource),
            revision=event.revision,
        )

    def added(self, dep: Deployment) -> dpb.WatchDeploymentsResponse:
        return dpb.WatchDeploymentsResponse(
            type=dpb.DEPLOYMENT_EVENT_TYPE_ADDED,
            deployment=deployment_to_pb(dep),
            revision=dep.revision,
        )

    def changed(self, dep: Deployment, revision: int) -> dpb.WatchDeploymentsResponse:
        return dpb.WatchDeploymentsResponse(
            type=dpb.DEPLOYMENT_EVENT_TYPE_CHANGED,
            deployment=deployment_to_pb(dep),
            revision=revision,
        )

    def deleted(
        self, deployment_id: str, revision: int, last: Deployment | None
    ) -> dpb.WatchDeploymentsResponse:
        dep = (
            deployment_to_pb(last)
            if last is not None
            else deployment_pb2.Deployment(id=deployment_id)
        )
        return dpb.WatchDeploymentsResponse(
            type=dpb.DEPLOYMENT_EVENT_TYPE_DELETED, deployment=dep, revision=revision
        )

    def synced(self, revision: int) -> dpb.WatchDeploymentsResponse:
        return dpb.WatchDeploymentsResponse(
            type=dpb.DEPLOYMENT_EVENT_TYPE_SYNCED, revision=revision
        )

    def reset(self, revision: int) -> dpb.WatchDeploymentsResponse:
        return dpb.WatchDeploymentsResponse(type=dpb.DEPLOYMENT_EVENT_TYPE_RESET, revision=revision)
