"""Watch messages are built once and shared (issue 9, item 3): a hundred watchers sending the
same node send one message object, never a stale one."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as npb

from controller.api.watch_events import EventMessages, NodeEvents, ResourceMessages
from controller.models import Capabilities, Node, NodeStatus
from controller.registry.events import Event, EventType

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new_node(revision: int = 1) -> Node:
    return Node(
        id=str(uuid.uuid4()),
        provider="aws",
        endpoint="10.0.0.7:7070",
        region="us-east-1",
        capabilities=Capabilities(cpu_cores=4.0, memory_gb=16.0),
        create_time=T0,
        update_time=T0,
        revision=revision,
    )


def test_the_same_node_is_encoded_once_for_every_watcher() -> None:
    events = NodeEvents()
    node = new_node(7)

    sent = [events.added(node) for _ in range(100)]

    assert all(message is sent[0] for message in sent)
    assert (sent[0].type, sent[0].node.id, sent[0].revision) == (
        npb.NODE_EVENT_TYPE_ADDED,
        node.id,
        7,
    )


def test_a_changed_node_gets_a_new_message_never_the_stale_one() -> None:
    events = NodeEvents()
    node = new_node(7)
    before = events.changed(node, 7)
    after = replace(node, status=NodeStatus.READY, revision=8)

    message = events.changed(after, 8)

    assert message is not before
    assert (message.node.status, message.revision) == (node_pb2.NODE_STATUS_READY, 8)
    assert before.revision == 7  # a message handed out is never changed


def test_an_equal_but_distinct_node_object_is_encoded_again() -> None:
    built: list[Node] = []

    def build(node: Node, revision: int) -> int:
        built.append(node)
        return revision

    messages: ResourceMessages[Node, int] = ResourceMessages(build)
    node = new_node()

    messages.get(node, 1)
    messages.get(replace(node), 1)  # e.g. a snapshot with a live heartbeat time
    messages.get(node, 2)

    assert len(built) == 3


def test_resource_messages_start_over_beyond_their_limit() -> None:
    messages: ResourceMessages[Node, int] = ResourceMessages(lambda _, rev: rev, limit=2)
    nodes = [new_node() for _ in range(3)]
    for node in nodes:
        messages.get(node, 1)

    messages.get(nodes[2], 1)
    assert messages.built == 3
    messages.get(nodes[0], 1)
    assert messages.built == 4


def test_a_live_event_is_encoded_once_for_every_subscriber() -> None:
    events = NodeEvents()
    node = new_node(3)
    event = Event(EventType.CHANGED, node, 3, previous=replace(node, status=NodeStatus.READY))

    first, again = events.event(event), events.event(event)

    assert first is again
    assert (first.type, first.previous_status) == (
        npb.NODE_EVENT_TYPE_STATUS_CHANGED,
        node_pb2.NODE_STATUS_READY,
    )


def test_event_messages_keep_the_last_events_only() -> None:
    messages: EventMessages[int] = EventMessages(lambda event: event.revision, limit=2)
    node = new_node()
    events = [Event(EventType.CHANGED, node, revision) for revision in (1, 2, 3)]
    for event in events:
        messages.get(event)

    messages.get(events[2])
    assert messages.built == 3
    messages.get(events[0])  # evicted, oldest first
    assert messages.built == 4


def test_a_deleted_node_is_forgotten() -> None:
    events = NodeEvents()
    node = new_node(1)
    added = events.added(node)

    events.event(Event(EventType.DELETED, node, 2))

    assert events.added(node) is not added
