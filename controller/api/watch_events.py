"""Watch response messages of nodes and deployments, built from registry events.

Shared messages: one encoder serves every watcher of its kind, and a hundred watchers replaying
the same fleet, or receiving the same live event, would otherwise convert each resource a
hundred times (a fifth of the event loop went to `node_to_pb` under 100 replaying watchers). So
each message is built once, for the very same (immutable) resource or event object, and handed
to every watcher that sends it. A message handed out is shared: nobody may change it (gRPC only
serializes it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from automator67.v1 import deployment_pb2, node_pb2
from automator67.v1 import deployment_service_pb2 as dpb
from automator67.v1 import node_service_pb2 as npb

from controller.api.convert import deployment_to_pb, node_status_pb, node_to_pb
from controller.models import Deployment, Node
from controller.registry.events import Event, EventType

RESOURCES_KEPT = 100_000  # messages kept per kind of message, one per resource id
EVENTS_KEPT = 1024  # live event messages kept (a watcher's buffer holds as many events)


class Identified(Protocol):
    @property
    def id(self) -> str: ...


K = TypeVar("K", bound=Identified)
M = TypeVar("M")


class ResourceMessages(Generic[K, M]):
    """The message of a resource at a revision, one entry per resource id: an entry serves only
    the very object it was built from (a change makes a new object), so it is never stale. Holds
    at most `limit` entries; beyond, it starts over."""

    def __init__(self, build: Callable[[K, int], M], limit: int = RESOURCES_KEPT) -> None:
        self._build = build
        self._limit = limit
        self._entries: dict[str, tuple[K, int, M]] = {}
        self.built = 0

    def get(self, resource: K, revision: int) -> M:
        entry = self._entries.get(resource.id)
        if entry is not None and entry[0] is resource and entry[1] == revision:
            return entry[2]
        message = self._build(resource, revision)
        self.built += 1
        if entry is None and len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[resource.id] = (resource, revision, message)
        return message

    def forget(self, resource_id: str) -> None:
        self._entries.pop(resource_id, None)


class EventMessages(Generic[M]):
    """The message of each of the last `limit` events, by identity: every subscriber receives
    the same event object."""

    def __init__(self, build: Callable[[Event[Any]], M], limit: int = EVENTS_KEPT) -> None:
        self._build = build
        self._limit = limit
        self._entries: dict[int, tuple[Event[Any], M]] = {}  # by id(event), oldest first
        self.built = 0

    def get(self, event: Event[Any]) -> M:
        entry = self._entries.get(id(event))
        if entry is not None and entry[0] is event:
            return entry[1]
        message = self._build(event)
        self.built += 1
        if len(self._entries) >= self._limit:
            del self._entries[next(iter(self._entries))]
        self._entries[id(event)] = (event, message)  # holding the event keeps its id unique
        return message


def _node_event(event: Event[Any]) -> npb.WatchNodesResponse:
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


def _node_added(node: Node, revision: int) -> npb.WatchNodesResponse:
    return npb.WatchNodesResponse(
        type=npb.NODE_EVENT_TYPE_ADDED, node=node_to_pb(node), revision=revision
    )


def _node_changed(node: Node, revision: int) -> npb.WatchNodesResponse:
    return npb.WatchNodesResponse(
        type=npb.NODE_EVENT_TYPE_CHANGED, node=node_to_pb(node), revision=revision
    )


class NodeEvents:
    def __init__(self) -> None:
        self._events = EventMessages(_node_event)
        self._added = ResourceMessages(_node_added)
        self._changed = ResourceMessages(_node_changed)

    def event(self, event: Event[Any]) -> npb.WatchNodesResponse:
        if event.type is EventType.DELETED:
            self._added.forget(event.resource.id)
            self._changed.forget(event.resource.id)
        return self._events.get(event)

    def added(self, node: Node) -> npb.WatchNodesResponse:
        return self._added.get(node, node.revision)

    def changed(self, node: Node, revision: int) -> npb.WatchNodesResponse:
        return self._changed.get(node, revision)

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


def _deployment_event(event: Event[Any]) -> dpb.WatchDeploymentsResponse:
    return dpb.WatchDeploymentsResponse(
        type=_DEPLOYMENT_EVENT_TYPES[event.type],
        deployment=deployment_to_pb(event.resource),
        revision=event.revision,
    )


def _deployment_added(dep: Deployment, revision: int) -> dpb.WatchDeploymentsResponse:
    return dpb.WatchDeploymentsResponse(
        type=dpb.DEPLOYMENT_EVENT_TYPE_ADDED, deployment=deployment_to_pb(dep), revision=revision
    )


def _deployment_changed(dep: Deployment, revision: int) -> dpb.WatchDeploymentsResponse:
    return dpb.WatchDeploymentsResponse(
        type=dpb.DEPLOYMENT_EVENT_TYPE_CHANGED, deployment=deployment_to_pb(dep), revision=revision
    )


class DeploymentEvents:
    def __init__(self) -> None:
        self._events = EventMessages(_deployment_event)
        self._added = ResourceMessages(_deployment_added)
        self._changed = ResourceMessages(_deployment_changed)

    def event(self, event: Event[Any]) -> dpb.WatchDeploymentsResponse:
        if event.type is EventType.DELETED:
            self._added.forget(event.resource.id)
            self._changed.forget(event.resource.id)
        return self._events.get(event)

    def added(self, dep: Deployment) -> dpb.WatchDeploymentsResponse:
        return self._added.get(dep, dep.revision)

    def changed(self, dep: Deployment, revision: int) -> dpb.WatchDeploymentsResponse:
        return self._changed.get(dep, revision)

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
