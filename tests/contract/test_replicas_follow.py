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
from controller.registry.nodes import NodeRegistry
from controller.store import open_store
from controller.store.base import Store

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
