"""Watch replays (issue 9, item 3): paged, bounded by what the registry has applied, and cheap
for a client that never reads. A fake registry and a fake change log stand in for the real ones,
a fake stream for gRPC's; the messages are the real WatchNodes responses."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from automator67.v1 import node_service_pb2 as npb
from google.protobuf.message import Message

from controller.api.watch import MAX_REPLAY, SEND_TURNS, STATE_CHUNK, Watch
from controller.api.watch_events import NodeEvents
from controller.models import Capabilities, Node, NodeStatus
from controller.registry.changes import ChangeLog
from controller.registry.events import EventHub
from controller.store.base import Change

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ADDED, CHANGED, DELETED = (
    npb.NODE_EVENT_TYPE_ADDED,
    npb.NODE_EVENT_TYPE_CHANGED,
    npb.NODE_EVENT_TYPE_DELETED,
)
SYNCED, RESET = npb.NODE_EVENT_TYPE_SYNCED, npb.NODE_EVENT_TYPE_RESET


class Plane:
    """A change log and the registry that mirrors it. `commit` writes the log only (a write the
    registry has not applied yet); `put` and `delete` do both, as a registry write does."""

    def __init__(self) -> None:
        self.log: list[Change] = []
        self.rows_read = 0
        self.events: EventHub[Node] = EventHub()
        self.revision = 0  # what the registry has applied
        self.nodes: dict[str, Node] = {}

    # The store's change log (`ChangeSource`).
    async def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        page = [c for c in self.log if c.revision > revision][:limit]
        self.rows_read += len(page)
        return page

    async def changes_revision(self) -> int:
        return self.log[-1].revision if self.log else 0

    # The registry (`Source`).
    def snapshot(self) -> list[Node]:
        return sorted(self.nodes.values(), key=lambda node: node.id)

    def snapshot_of(self, node_id: str) -> Node | None:
        return self.nodes.get(node_id)

    def commit(self, node_id: str, *, deleted: bool = False) -> int:
        revision = len(self.log) + 1
        self.log.append(Change(revision, "node", node_id, deleted))
        return revision

    def put(self, node: Node) -> Node:
        stored = replace(node, revision=self.commit(node.id))
        self.nodes[node.id] = stored
        self.revision = stored.revision
        return stored

    def delete(self, node_id: str) -> None:
        self.revision = self.commit(node_id, deleted=True)
        del self.nodes[node_id]

    def other_kind(self) -> int:
        """A deployment's change: in the log, not in this (the node) registry's revision."""
        revision = len(self.log) + 1
        self.log.append(Change(revision, "deployment", str(uuid.uuid4()), False))
        return revision


class Log:
    """`Plane` as a `ChangeSource`."""

    def __init__(self, plane: Plane) -> None:
        self._plane = plane

    async def revision(self) -> int:
        return await self._plane.changes_revision()

    async def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        return await self._plane.changes_since(revision, limit)


class Stream:
    """The server side of one WatchNodes call. With `stalled`, the client never reads: the
    first write blocks, as gRPC's does once flow control has no window left."""

    def __init__(self, *, stalled: bool = False) -> None:
        self.sent: list[npb.WatchNodesResponse] = []
        self.synced = asyncio.Event()
        self.blocked = asyncio.Event()
        self._stalled = stalled

    async def write(self, message: Message) -> None:
        if self._stalled:
            self.blocked.set()
            await asyncio.Event().wait()
        assert isinstance(message, npb.WatchNodesResponse)
        self.sent.append(message)
        if message.type == SYNCED:
            self.synced.set()


def new_node() -> Node:
    return Node(
        id=str(uuid.uuid4()),
        provider="aws",
        endpoint="10.0.0.7:7070",
        region="us-east-1",
        capabilities=Capabilities(cpu_cores=4.0, memory_gb=16.0),
        create_time=T0,
        update_time=T0,
    )


def watch(plane: Plane, page_size: int) -> Watch[Node]:
    return Watch("node", plane, NodeEvents(), ChangeLog(Log(plane), page_size))


async def replay(plane: Plane, start: int, page_size: int = 3) -> list[npb.WatchNodesResponse]:
    """What a watch from `start` sends up to and including SYNCED."""
    stream = Stream()
    task = asyncio.create_task(watch(plane, page_size).serve(start, cast(Any, stream)))
    try:
        await asyncio.wait_for(stream.synced.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return stream.sent


async def test_a_replay_sends_each_changed_node_once_at_its_last_change_across_pages() -> None:
    plane = Plane()
    kept = plane.put(new_node())
    start = plane.revision
    first, second, gone = plane.put(new_node()), plane.put(new_node()), plane.put(new_node())
    for step in range(7):  # `first` changes on every page of three
        plane.other_kind()
        first = plane.put(replace(first, status=NodeStatus.READY, endpoint=f"10.0.0.{step}:1"))
    plane.delete(gone.id)
    second = plane.put(replace(second, status=NodeStatus.SUSPECT))

    sent = await replay(plane, start)

    assert [(m.type, m.node.id, m.revision) for m in sent] == [
        (CHANGED, first.id, first.revision),
        (DELETED, gone.id, plane.revision - 1),
        (CHANGED, second.id, second.revision),
        (SYNCED, "", plane.revision),
    ]
    assert sent[0].node.endpoint == "10.0.0.6:1"
    assert kept.id not in {m.node.id for m in sent}


async def test_a_replay_stops_at_what_the_registry_has_applied() -> None:
    plane = Plane()
    start = plane.put(new_node()).revision
    applied = plane.put(new_node())
    pending = new_node()
    plane.commit(pending.id)  # durable, but its event is not published yet: it comes live

    sent = await replay(plane, start)

    assert [(m.type, m.node.id, m.revision) for m in sent] == [
        (CHANGED, applied.id, applied.revision),
        (SYNCED, "", applied.revision),
    ]


async def test_a_caught_up_replay_sends_synced_alone_at_its_start() -> None:
    plane = Plane()
    node = plane.put(new_node())
    later = plane.other_kind()  # a later revision, of a deployment, a client may resume from

    assert [(m.type, m.revision) for m in await replay(plane, node.revision)] == [
        (SYNCED, node.revision)
    ]
    assert [(m.type, m.revision) for m in await replay(plane, later)] == [(SYNCED, later)]


async def test_a_watcher_that_never_reads_costs_one_page_of_the_change_log() -> None:
    plane = Plane()
    for _ in range(5_000):
        plane.put(new_node())
    stream = Stream(stalled=True)
    task = asyncio.create_task(watch(plane, 500).serve(1, cast(Any, stream)))
    try:
        await asyncio.wait_for(stream.blocked.wait(), 10)
        for _ in range(100):
            await asyncio.sleep(0)
        assert plane.rows_read <= 500
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_replay_too_far_behind_sends_the_state_without_reading_the_log() -> None:
    plane = Plane()
    node = plane.put(new_node())
    for step in range(MAX_REPLAY + 1):
        node = plane.put(replace(node, endpoint=f"10.0.0.1:{step}"))

    sent = await replay(plane, 1)

    assert [(m.type, m.node.id, m.revision) for m in sent] == [
        (RESET, "", plane.revision),
        (ADDED, node.id, node.revision),
        (SYNCED, "", plane.revision),
    ]
    assert plane.rows_read == 0


@pytest.mark.parametrize(
    ("after", "until", "pages"),
    [
        (0, 7, [[1, 2, 3], [4, 5, 6], [7]]),
        (0, 6, [[1, 2, 3], [4, 5, 6]]),
        (2, 5, [[3, 4, 5]]),
        (5, 99, [[6, 7, 8], [9, 10]]),
        (10, 10, []),
        (4, 3, []),
    ],
    ids=[
        "to a page's middle",
        "to a page's end",
        "a window",
        "past the end",
        "at the end",
        "ahead of until",
    ],
)
async def test_change_log_pages_hold_the_changes_in_the_window_oldest_first(
    after: int, until: int, pages: list[list[int]]
) -> None:
    plane = Plane()
    for _ in range(10):
        plane.other_kind()

    got = [
        [c.revision for c in page] async for page in ChangeLog(Log(plane), 3).pages(after, until)
    ]

    assert got == pages


class Tally:
    """Node messages being written at once, across every stream that shares it."""

    def __init__(self) -> None:
        self.writing = self.most = 0


class SlowStream(Stream):
    """Each node message takes a trip through the event loop, as gRPC's writes do."""

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self._tally = tally

    async def write(self, message: Message) -> None:
        assert isinstance(message, npb.WatchNodesResponse)
        if message.type in (ADDED, CHANGED):
            self._tally.writing += 1
            self._tally.most = max(self._tally.most, self._tally.writing)
            await asyncio.sleep(0)
            self._tally.writing -= 1
        await super().write(message)


@pytest.mark.parametrize("start", [0, 1], ids=["state", "replay"])
async def test_bulk_sends_take_turns_across_watchers(start: int) -> None:
    plane = Plane()
    for _ in range(2 * STATE_CHUNK + 1):
        plane.put(new_node())
    shared = watch(plane, 500)
    tally = Tally()
    streams = [SlowStream(tally) for _ in range(10)]
    tasks = [asyncio.create_task(shared.serve(start, cast(Any, s))) for s in streams]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.synced.wait() for s in streams)), 30)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert tally.most == SEND_TURNS
    nodes = 2 * STATE_CHUNK + 1 - start  # a replay from 1 leaves out the first node
    assert all(len(s.sent) == nodes + 1 for s in streams)


async def test_a_watcher_that_never_reads_gives_its_turn_up() -> None:
    plane = Plane()
    for _ in range(3):
        plane.put(new_node())
    shared = watch(plane, 500)
    stalled, reading = Stream(stalled=True), Stream()
    tasks = [asyncio.create_task(shared.serve(0, cast(Any, stalled)))]
    try:
        await asyncio.wait_for(stalled.blocked.wait(), 10)
        tasks.append(asyncio.create_task(shared.serve(0, cast(Any, reading))))
        await asyncio.wait_for(reading.synced.wait(), 10)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert [m.type for m in reading.sent] == [ADDED, ADDED, ADDED, SYNCED]
