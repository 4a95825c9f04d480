"""WatchNodes: the current state (or the changes since a revision), then live changes.

Consistency: the subscription is taken before the state is read, and the state is read without
yielding to the event loop, so every change is either in the state sent or queued after it;
queued events at or below the revision already sent are skipped. A watcher whose buffer
overflows gets RESET and the current state again, on the same stream."""

from __future__ import annotations

from typing import Any

from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as pb
from grpc import aio

from controller.api.convert import node_status_pb, node_to_pb
from controller.errors import InvalidArgumentError
from controller.models import Node
from controller.registry.events import Event, EventType, Overflowed
from controller.registry.nodes import NodeRegistry
from controller.store.base import Store

Context = aio.ServicerContext[Any, Any]
MAX_REPLAY = 10_000  # beyond this many changes, sending the current state is cheaper


class NodeWatch:
    def __init__(self, nodes: NodeRegistry, store: Store, buffer: int = 1024) -> None:
        self._nodes = nodes
        self._store = store
        self._buffer = buffer

    async def serve(self, request: pb.WatchNodesRequest, context: Context) -> None:
        if request.start_revision < 0:
            raise InvalidArgumentError.single("start_revision", "must not be negative")
        subscription = self._nodes.events.subscribe(self._buffer)
        try:
            if request.start_revision:
                sent = await self._replay(request.start_revision, context)
            else:
                sent = await self._send_state(context, reset=False)
            while True:
                try:
                    event = await subscription.next()
                except Overflowed:
                    sent = await self._send_state(context, reset=True)
                    continue
                if event.revision > sent:
                    await context.write(_event_pb(event))
        finally:
            subscription.close()

    async def _send_state(self, context: Context, *, reset: bool) -> int:
        nodes, revision = self._nodes.snapshot(), self._nodes.revision  # no await in between
        if reset:
            await context.write(
                pb.WatchNodesResponse(type=pb.NODE_EVENT_TYPE_RESET, revision=revision)
            )
        for node in nodes:
            await context.write(
                pb.WatchNodesResponse(
                    type=pb.NODE_EVENT_TYPE_ADDED, node=node_to_pb(node), revision=node.revision
                )
            )
        await context.write(
            pb.WatchNodesResponse(type=pb.NODE_EVENT_TYPE_SYNCED, revision=revision)
        )
        return revision

    async def _replay(self, start: int, context: Context) -> int:
        current = await self._store.revision()
        if start > current:
            raise InvalidArgumentError.single(
                "start_revision", f"is ahead of the store (at revision {current})"
            )
        changes = await self._store.changes_since(start, MAX_REPLAY + 1)
        if len(changes) > MAX_REPLAY:
            return await self._send_state(context, reset=True)
        latest: dict[str, tuple[int, bool]] = {}
        for change in changes:
            if change.kind == "node":
                latest.pop(change.resource_id, None)  # keep the order of last changes
                latest[change.resource_id] = (change.revision, change.deleted)
        sent = max((c.revision for c in changes), default=start)
        for node_id, (revision, deleted) in latest.items():
            node = self._nodes.snapshot_of(node_id)
            if deleted and node is None:
                gone = node_pb2.Node(id=node_id)
                await context.write(
                    pb.WatchNodesResponse(
                        type=pb.NODE_EVENT_TYPE_DELETED, node=gone, revision=revision
                    )
                )
            elif node is not None:
                await context.write(
                    pb.WatchNodesResponse(
                        type=pb.NODE_EVENT_TYPE_CHANGED, node=node_to_pb(node), revision=revision
                    )
                )
        await context.write(pb.WatchNodesResponse(type=pb.NODE_EVENT_TYPE_SYNCED, revision=sent))
        return sent


def _event_pb(event: Event[Node]) -> pb.WatchNodesResponse:
    node, previous = event.resource, event.previous
    response = pb.WatchNodesResponse(node=node_to_pb(node), revision=event.revision)
    if event.type is EventType.ADDED:
        response.type = pb.NODE_EVENT_TYPE_ADDED
    elif event.type is EventType.DELETED:
        response.type = pb.NODE_EVENT_TYPE_DELETED
    elif previous is not None and previous.status is not node.status:
        response.type = pb.NODE_EVENT_TYPE_STATUS_CHANGED
        response.previous_status = node_status_pb(previous.status)
    else:
        response.type = pb.NODE_EVENT_TYPE_CHANGED
    return response
