"""Two replicas on one store: each one's registries follow the store's change log, so a write on
one is seen by the other's reads and watchers, in revision order, with its last state on a
delete; on PostgreSQL the other replica is woken by a notification, not a poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from controller.clock import FakeClock
from controller.errors import ConflictError, NotFoundError
from controller.models import Capabilities, DeploymentSpec, NodeSpec, NodeStatus
from controller.registry.deployments import DeploymentRegistry
from controller.registry.events import EventType
from controller.registry.feed import ChangeFeed
from controller.registry.leadership import LEASE
from controller.registry.nodes import NodeRegistry
from controller.store import open_store
from controller.store.base import Fence, Store

NODE = NodeSpec(
    provider="aws",
    endpoint="10.0.0.7:7070",
    region="eu-west-1",
    capabilities=Capabilities(cpu_cores=4.0, memory_gb=16.0),
)
WAIT_S = 10.0


@dataclass
class Replica:
    store: Store
    feed: ChangeFeed
    nodes: NodeRegistry
    deployments: DeploymentRegistry


async def replica(url: str) -> Replica:
    store = open_store(url)
    await store.open()
    feed = ChangeFeed(store, poll_s=60.0)  # so that a test passes only if woken on time
    nodes = NodeRegistry(store, FakeClock(), feed=feed)
    deployments = DeploymentRegistry(store, FakeClock(), feed)
    await nodes.load()
    await deployments.load()
    return Replica(store, feed, nodes, deployments)


@pytest_asyncio.fixture
async def pair(store_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = await replica(store_url), await replica(store_url)
    yield a, b
    for r in (a, b):
        await r.feed.stop()
        await r.store.close()


async def test_a_write_on_one_replica_is_read_and_watched_on_the_other(
    pair: tuple[Replica, Replica],
) -> None:
    a, b = pair
    watcher = b.nodes.events.subscribe()

    node = await a.nodes.register(NODE)
    await b.feed.caught_up()

    assert b.nodes.get(node.id) == a.nodes.get(node.id)
    event = await asyncio.wait_for(watcher.next(), WAIT_S)
    assert (event.type, event.resource.id, event.revision) == (
        EventType.ADDED,
        node.id,
        node.revision,
    )
    assert b.nodes.liveness.status(node.id) is NodeStatus.PENDING  # tracked there too

    await b.nodes.delete(node.id, node_etag(node.revision))
    await a.feed.caught_up()
    with pytest.raises(NotFoundError):
        a.nodes.get(node.id)
    deleted = await asyncio.wait_for(watcher.next(), WAIT_S)
    assert deleted.type is EventType.DELETED and deleted.resource == node
    assert a.nodes.liveness.status(node.id) is None


async def test_a_replica_that_starts_while_another_writes_loads_every_deployment(
    pair: tuple[Replica, Replica], store_url: str
) -> None:
    """The start loads the nodes, then the deployments, through one feed: a deployment written
    between the two reaches the deployments' view from the feed before that view's load, which
    must then still take every deployment (a restarted replica once failed to start here)."""
    a, _ = pair
    before = await a.deployments.create(DeploymentSpec(name="before", image="nginx"))
    store = open_store(store_url)
    await store.open()
    feed = ChangeFeed(store, poll_s=60.0)
    try:
        nodes = NodeRegistry(store, FakeClock(), feed=feed)
        deployments = DeploymentRegistry(store, FakeClock(), feed)
        await nodes.load()
        between = await a.deployments.create(DeploymentSpec(name="between", image="nginx"))
        await feed.caught_up()  # the feed hands `between` to the deployments' view, not loaded

        await deployments.load()

        assert {d.name for d in deployments.latest()} == {"before", "between"}
        assert deployments.get(between.id).revision == between.revision
        assert deployments.get(before.id).revision == before.revision
    finally:
        await feed.stop()
        await store.close()


async def test_the_other_replica_follows_on_its_own_once_started(
    pair: tuple[Replica, Replica],
) -> None:
    a, b = pair
    b.feed.start()  # woken by the store (PostgreSQL NOTIFY; SQLite: one process writes it)
    if type(b.store).__name__ == "SQLiteStore":
        pytest.skip("an embedded store has one serving process: nothing to be woken by")
    watcher = b.deployments.events.subscribe()

    created = await a.deployments.create(DeploymentSpec(name="web", image="nginx", replicas=2))

    event = await asyncio.wait_for(watcher.next(), WAIT_S)  # well before the 60 s poll
    assert event.resource == created
    assert b.deployments.get(created.id) == created


async def test_a_stale_etag_from_a_lagging_replica_is_refused_by_the_store(
    pair: tuple[Replica, Replica],
) -> None:
    a, b = pair
    created = await a.deployments.create(DeploymentSpec(name="web", image="nginx", replicas=1))
    await b.feed.caught_up()
    await a.deployments.update(
        created.id, DeploymentSpec(name="web", image="nginx", replicas=3), ["replicas"]
    )
    # b has not followed yet: its index still holds the first version, whose etag it accepts;
    # the store, the one source of truth, refuses the write.
    with pytest.raises(ConflictError):
        await b.deployments.update(
            created.id,
            DeploymentSpec(name="web", image="nginx", replicas=5),
            ["replicas"],
            node_etag(created.revision),
        )
    await b.feed.caught_up()
    assert b.deployments.get(created.id).replicas == 3


async def test_a_request_id_used_on_one_replica_replays_on_the_other(
    pair: tuple[Replica, Replica],
) -> None:
    a, b = pair
    first = await a.nodes.register(NODE, request_id="join-1")

    again = await b.nodes.register(NODE, request_id="join-1")  # b has not followed yet

    assert again.id == first.id


def node_etag(revision: int) -> str:
    return str(revision)


@dataclass
class View:
    """What a replica knows of the others (`registry/leadership.py` keeps it in a server)."""

    replica_id: str
    leading: bool = False
    live_replicas: frozenset[str] = frozenset({"a", "b"})
    epoch: int = 0  # of the store's leader lease, when this replica took it

    def fence(self) -> Fence | None:
        return Fence(LEASE, self.replica_id, self.epoch) if self.leading else None


@dataclass
class Judging:
    """Two replicas on one store that judge liveness as in a cluster: a leads, both alive."""

    a: Replica
    b: Replica
    view_a: View
    view_b: View
    clock: FakeClock


@pytest_asyncio.fixture
async def judging(store_url: str) -> AsyncIterator[Judging]:
    clock = FakeClock()
    views = View("a", leading=True), View("b")
    made = []
    for view in views:
        store = open_store(store_url)
        await store.open()
        if view.leading:
            view.epoch = (await store.campaign(LEASE, view.replica_id, 3600)).epoch
        feed = ChangeFeed(store, poll_s=60.0)
        nodes = NodeRegistry(store, clock, feed=feed, replicas=view)
        deployments = DeploymentRegistry(store, clock, feed)
        await nodes.load()
        await deployments.load()
        made.append(Replica(store, feed, nodes, deployments))
    yield Judging(made[0], made[1], views[0], views[1], clock)
    for r in made:
        await r.feed.stop()
        await r.store.close()


async def test_only_the_replica_holding_a_stream_judges_the_node_and_it_moves_with_the_stream(
    judging: Judging,
) -> None:
    a, b, clock = judging.a, judging.b, judging.clock
    node = await a.nodes.register(NODE)
    await b.feed.caught_up()
    b.nodes.stream_opened(node.id)  # the agent streams to b
    await b.nodes.persist_statuses()
    await a.feed.caught_up()

    assert a.nodes.get(node.id).status is NodeStatus.READY
    assert b.nodes.liveness.status(node.id) is NodeStatus.READY
    assert a.nodes.liveness.status(node.id) is None  # a leads, but b holds it: b judges

    a.nodes.stream_opened(node.id)  # the agent moved to a
    await a.nodes.persist_statuses()
    await b.feed.caught_up()
    b.nodes.stream_closed(node.id, "replaced")  # b's handler ends its stream

    assert b.nodes.liveness.status(node.id) is None
    clock.advance(60)
    b.nodes.sweep()
    a.nodes.beat(node.id)
    a.nodes.sweep()
    await a.nodes.persist_statuses()
    await b.nodes.persist_statuses()
    await b.feed.caught_up()
    assert b.nodes.get(node.id).status is NodeStatus.READY  # b judged nothing


async def test_a_replica_that_loses_the_stream_to_another_ends_its_own(judging: Judging) -> None:
    a, b = judging.a, judging.b
    released: list[tuple[str, str]] = []
    a.nodes.on_released.append(lambda node_id, holder: released.append((node_id, holder)))
    node = await a.nodes.register(NODE)
    a.nodes.stream_opened(node.id)
    await a.nodes.persist_statuses()
    await b.feed.caught_up()

    b.nodes.stream_opened(node.id)  # a newer stream, on b
    await b.nodes.persist_statuses()
    await a.feed.caught_up()

    assert released == [(node.id, "b")]


async def test_the_leader_gives_a_dead_replicas_nodes_the_failover_grace_then_offline(
    judging: Judging,
) -> None:
    a, b, view_a, clock = judging.a, judging.b, judging.view_a, judging.clock
    node = await b.nodes.register(NODE)
    b.nodes.stream_opened(node.id)
    await b.nodes.persist_statuses()
    await a.feed.caught_up()
    assert a.nodes.liveness.status(node.id) is None

    # b dies: its lease runs out. A follower would never judge the node; the leader does,
    # from now on, with the failover grace (the agent may be reconnecting elsewhere).
    view_a.live_replicas = frozenset({"a"})
    a.nodes.reconsider()
    assert a.nodes.liveness.status(node.id) is NodeStatus.READY
    settings = a.nodes.liveness.settings
    clock.advance(settings.failover_grace_s - 1)
    a.nodes.sweep()
    assert a.nodes.liveness.status(node.id) is NodeStatus.READY  # not judged in the grace
    clock.advance(1 + settings.offline_after_s - settings.suspect_after_s - 1)
    a.nodes.sweep()
    assert a.nodes.liveness.status(node.id) is NodeStatus.SUSPECT
    clock.advance(2)
    a.nodes.sweep()
    await a.nodes.persist_statuses()
    assert a.nodes.get(node.id).status is NodeStatus.OFFLINE


async def test_a_follower_never_marks_a_node_offline(judging: Judging) -> None:
    a, b, view_b, clock = judging.a, judging.b, judging.view_b, judging.clock
    node = await a.nodes.register(NODE)
    a.nodes.stream_opened(node.id)
    await a.nodes.persist_statuses()
    await b.feed.caught_up()
    view_b.live_replicas = frozenset({"b"})  # a looks dead to b, which does not lead
    b.nodes.reconsider()

    clock.advance(3600)
    b.nodes.sweep()
    await b.nodes.persist_statuses()

    assert b.nodes.liveness.status(node.id) is None
    assert b.nodes.get(node.id).status is NodeStatus.READY


async def test_a_deposed_leaders_offline_verdict_is_not_written(judging: Judging) -> None:
    a, b, view_a, clock = judging.a, judging.b, judging.view_a, judging.clock
    node = await b.nodes.register(NODE)
    b.nodes.stream_opened(node.id)
    await b.nodes.persist_statuses()
    await a.feed.caught_up()
    view_a.live_replicas = frozenset({"a"})  # b looks dead to a, which believes it leads
    a.nodes.reconsider()
    view_a.epoch += 1  # but the store's lease moved on: a's fence is stale
    settings = a.nodes.liveness.settings
    clock.advance(settings.failover_grace_s + settings.offline_after_s - settings.suspect_after_s)
    a.nodes.sweep()

    await a.nodes.persist_statuses()  # refused in the store, not raised

    await b.feed.caught_up()
    assert b.nodes.get(node.id).status is NodeStatus.READY
