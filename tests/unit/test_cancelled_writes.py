"""A caller cancelled while the store writes (a gRPC deadline, a client that hung up) leaves the
write whole: the store, the index, the watchers, the idempotency record and liveness agree.

The store is the real SQLite store behind a gated table: an armed table holds the next write
at a gate and then does it whatever happens to its caller, as a store's own thread does (the
caller's await can be cancelled, the transaction cannot). Each test cancels the caller once
the write has begun, opens the gate, lets a later write pass (it queues behind the first), and
compares every view with the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Generic, TypeVar

import pytest

from controller.clock import FakeClock
from controller.errors import FailedPreconditionError, NotFoundError
from controller.models import (
    Capabilities,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    Node,
    NodeSpec,
    Resources,
)
from controller.registry.deployments import DeploymentRegistry
from controller.registry.events import EventHub, EventType, Subscription
from controller.registry.nodes import NodeRegistry
from controller.store.base import (
    Change,
    Fence,
    Lease,
    RequestKey,
    RequestRecord,
    Store,
    T,
    Table,
)

R = TypeVar("R")
Resource = TypeVar("Resource", Node, Deployment)

DEPLOYMENT = DeploymentSpec(
    name="web", image="nginx:1.27", replicas=1, resources=Resources(cpu_cores=0.5)
)
NODE = NodeSpec(
    provider="render",
    endpoint="https://api.render.com",
    region="us-east-1",
    capabilities=Capabilities(cpu_cores=4.0, memory_gb=8.0, disk_gb=50.0),
)


class GatedTable(Generic[T]):
    """`Table` over a real one. Once `arm()`ed, the next write sets `begun`, waits for `release`
    and is then done on the real table even if its caller was cancelled meanwhile."""

    def __init__(self, inner: Table[T]) -> None:
        self._inner: Table[T] = inner
        self._armed = False
        self.begun = asyncio.Event()
        self.release = asyncio.Event()
        self.jobs: list[asyncio.Task[Any]] = []  # the "store thread"'s work

    def arm(self) -> None:
        self._armed = True
        self.begun.clear()
        self.release.clear()

    async def get(self, resource_id: str) -> T | None:
        return await self._inner.get(resource_id)

    async def list_all(self) -> list[T]:
        return await self._inner.list_all()

    async def find_request(self, request_id: str) -> RequestRecord | None:
        return await self._inner.find_request(request_id)

    async def create(self, resource: T, request: RequestKey | None = None) -> T:
        return await self._write(lambda: self._inner.create(resource, request))

    async def create_many(
        self, items: Sequence[tuple[T, RequestKey | None]]
    ) -> list[T | RequestRecord]:
        return await self._write(lambda: self._inner.create_many(items))

    async def update(self, resource: T, expect_revision: int) -> T:
        return await self._write(lambda: self._inner.update(resource, expect_revision))

    async def update_many(
        self, resources: Sequence[T], fence: Fence | None = None
    ) -> list[T | None]:
        return await self._write(lambda: self._inner.update_many(resources, fence))

    async def delete(
        self, resource_id: str, expect_revision: int | None = None, fence: Fence | None = None
    ) -> int:
        return await self._write(lambda: self._inner.delete(resource_id, expect_revision, fence))

    async def _write(self, op: Callable[[], Coroutine[Any, Any, R]]) -> R:
        if not self._armed:
            return await op()
        self._armed = False

        async def job() -> R:
            await self.release.wait()
            return await op()

        task = asyncio.create_task(job())
        self.jobs.append(task)
        self.begun.set()
        # Like run_in_executor: cancelling this await does not stop the work already begun.
        return await asyncio.shield(task)


class GatedStore:
    """`Store` over a real one, with gated tables."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.nodes = GatedTable[Node](inner.nodes)
        self.deployments = GatedTable[Deployment](inner.deployments)

    async def open(self) -> None:
        await self._inner.open()

    async def close(self) -> None:
        await self._inner.close()

    async def revision(self) -> int:
        return await self._inner.revision()

    async def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        return await self._inner.changes_since(revision, limit)

    async def campaign(self, name: str, holder: str, ttl_s: float) -> Lease:
        return await self._inner.campaign(name, holder, ttl_s)

    async def leases(self, prefix: str) -> list[Lease]:
        return await self._inner.leases(prefix)

    async def wait_for_changes(self, timeout_s: float) -> None:
        await self._inner.wait_for_changes(timeout_s)

    async def record_heartbeats(self, times: Mapping[str, datetime]) -> None:
        await self._inner.record_heartbeats(times)


class Watcher(Generic[Resource]):
    """What a watcher that applies every event sees: id -> revision."""

    def __init__(self, hub: EventHub[Resource]) -> None:
        self.view: dict[str, int] = {}
        self.revision = 0
        self._subscription: Subscription[Resource] = hub.subscribe()
        self._moved = asyncio.Condition()
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            event = await self._subscription.next()
            if event.type is EventType.DELETED:
                self.view.pop(event.resource.id, None)
            else:
                self.view[event.resource.id] = event.resource.revision
            async with self._moved:
                self.revision = max(self.revision, event.revision)
                self._moved.notify_all()

    async def caught_up(self, revision: int) -> None:
        async with self._moved:
            await asyncio.wait_for(self._moved.wait_for(lambda: self.revision >= revision), 5)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def cancel_mid_write(table: GatedTable[Any], write: Awaitable[Any]) -> None:
    """Starts `write`, cancels its caller once the store has begun it, then lets the store
    finish. The caller sees the cancellation."""
    table.arm()
    caller = asyncio.ensure_future(write)
    await asyncio.wait_for(table.begun.wait(), 5)
    caller.cancel()
    table.release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(asyncio.gather(*table.jobs), 5)  # committed


@pytest.fixture
async def gated(store: Store) -> GatedStore:
    return GatedStore(store)


@pytest.fixture
async def deployments(
    gated: GatedStore, clock: FakeClock
) -> AsyncIterator[tuple[DeploymentRegistry, Watcher[Deployment]]]:
    registry = DeploymentRegistry(gated, clock)
    await registry.load()
    watcher = Watcher(registry.events)
    yield registry, watcher
    await watcher.stop()


@pytest.fixture
async def nodes(
    gated: GatedStore, clock: FakeClock
) -> AsyncIterator[tuple[NodeRegistry, Watcher[Node]]]:
    registry = NodeRegistry(gated, clock)
    await registry.load()
    watcher = Watcher(registry.events)
    yield registry, watcher
    await watcher.stop()


async def assert_deployment_agrees(
    gated: GatedStore, registry: DeploymentRegistry, watcher: Watcher[Deployment], dep_id: str
) -> Deployment | None:
    """The store, Get, List, the latest state and a watcher agree on `dep_id`; returns it."""
    stored = await gated.deployments.get(dep_id)
    await watcher.caught_up(registry.revision)
    listed = {d.id: d for d in registry.list(page_size=1000).items}
    if stored is None:
        with pytest.raises(NotFoundError):
            registry.get(dep_id)
        assert dep_id not in listed
        assert dep_id not in watcher.view
        return None
    shown = registry.get(dep_id)
    assert shown == stored
    assert listed[dep_id] == stored
    assert {d.id: d for d in registry.latest()}[dep_id] == stored  # nothing left staged
    assert watcher.view.get(dep_id) == stored.revision
    return stored


async def assert_node_agrees(
    gated: GatedStore, registry: NodeRegistry, watcher: Watcher[Node], node_id: str
) -> Node | None:
    stored = await gated.nodes.get(node_id)
    await watcher.caught_up(registry.revision)
    if stored is None:
        with pytest.raises(NotFoundError):
            registry.get(node_id)
        assert node_id not in watcher.view
        assert registry.liveness.status(node_id) is None
        return None
    assert registry.get(node_id) == stored
    assert watcher.view.get(node_id) == stored.revision
    assert registry.liveness.status(node_id) is stored.status
    return stored


async def test_a_create_whose_caller_gave_up_is_whole_and_its_retry_returns_it(
    gated: GatedStore, deployments: tuple[DeploymentRegistry, Watcher[Deployment]]
) -> None:
    registry, watcher = deployments
    await cancel_mid_write(gated.deployments, registry.create(DEPLOYMENT, "r1"))

    retried = await registry.create(DEPLOYMENT, "r1")  # queues behind the first write
    record = await gated.deployments.find_request("r1")
    assert record is not None and record.resource_id == retried.id
    assert await assert_deployment_agrees(gated, registry, watcher, retried.id) == retried
    assert registry.changed.is_set()  # the scheduler is woken for it


async def test_a_registration_whose_caller_gave_up_is_whole_and_tracked(
    gated: GatedStore, nodes: tuple[NodeRegistry, Watcher[Node]]
) -> None:
    registry, watcher = nodes
    await cancel_mid_write(gated.nodes, registry.register(NODE, "n1"))

    retried = await registry.register(NODE, "n1")
    record = await gated.nodes.find_request("n1")
    assert record is not None and record.resource_id == retried.id
    assert await assert_node_agrees(gated, registry, watcher, retried.id) is not None


async def test_an_update_whose_caller_gave_up_is_whole(
    gated: GatedStore, deployments: tuple[DeploymentRegistry, Watcher[Deployment]]
) -> None:
    registry, watcher = deployments
    dep = await registry.create(DEPLOYMENT, "r1")
    registry.changed.clear()
    changed = replace(DEPLOYMENT, image="nginx:1.28")
    await cancel_mid_write(gated.deployments, registry.update(dep.id, changed, ["image"]))

    await registry.create(replace(DEPLOYMENT, name="later"))  # a later write passes
    stored = await assert_deployment_agrees(gated, registry, watcher, dep.id)
    assert stored is not None and stored.image == "nginx:1.28" and stored.revision > dep.revision
    assert registry.changed.is_set()


async def test_a_deletion_request_whose_caller_gave_up_is_whole(
    gated: GatedStore, deployments: tuple[DeploymentRegistry, Watcher[Deployment]]
) -> None:
    registry, watcher = deployments
    dep = await registry.create(DEPLOYMENT, "r1")
    await cancel_mid_write(gated.deployments, registry.delete(dep.id))

    await registry.create(replace(DEPLOYMENT, name="later"))
    stored = await assert_deployment_agrees(gated, registry, watcher, dep.id)
    assert stored is not None and stored.status is DeploymentStatus.STOPPING


async def test_a_removal_whose_caller_gave_up_is_whole_and_frees_the_name(
    gated: GatedStore, deployments: tuple[DeploymentRegistry, Watcher[Deployment]]
) -> None:
    registry, watcher = deployments
    dep = await registry.create(DEPLOYMENT, "r1")
    await cancel_mid_write(gated.deployments, registry.remove(dep.id))

    again = await registry.create(DEPLOYMENT)  # the name is free in every view
    assert await assert_deployment_agrees(gated, registry, watcher, dep.id) is None
    assert await assert_deployment_agrees(gated, registry, watcher, again.id) == again
    with pytest.raises(FailedPreconditionError, match="has since been deleted"):
        await registry.create(DEPLOYMENT, "r1")


async def test_a_persist_whose_caller_gave_up_is_whole(
    gated: GatedStore, deployments: tuple[DeploymentRegistry, Watcher[Deployment]]
) -> None:
    registry, watcher = deployments
    dep = await registry.create(DEPLOYMENT, "r1")
    registry.stage(replace(dep, status_reason="no node fits"))  # what the scheduler does
    await cancel_mid_write(gated.deployments, registry.persist())

    await registry.create(replace(DEPLOYMENT, name="later"))
    stored = await assert_deployment_agrees(gated, registry, watcher, dep.id)
    assert stored is not None and stored.status_reason == "no node fits"


async def test_a_node_deletion_whose_caller_gave_up_is_whole(
    gated: GatedStore, nodes: tuple[NodeRegistry, Watcher[Node]]
) -> None:
    registry, watcher = nodes
    node = await registry.register(NODE, "n1")
    await cancel_mid_write(gated.nodes, registry.delete(node.id))

    await registry.register(NODE)
    assert await assert_node_agrees(gated, registry, watcher, node.id) is None
    with pytest.raises(FailedPreconditionError, match="has since been deleted"):
        await registry.register(NODE, "n1")


async def test_settle_returns_once_writes_whose_callers_gave_up_are_whole(
    gated: GatedStore, deployments: tuple[DeploymentRegistry, Watcher[Deployment]]
) -> None:
    """What the server's shutdown waits for before it closes the store."""
    registry, _ = deployments
    table = gated.deployments
    table.arm()
    caller = asyncio.ensure_future(registry.create(DEPLOYMENT, "r1"))
    await asyncio.wait_for(table.begun.wait(), 5)
    caller.cancel()
    settling = asyncio.ensure_future(registry.settle())
    await asyncio.sleep(0)
    assert not settling.done()  # the write is still held at the gate
    table.release.set()
    await asyncio.wait_for(settling, 5)

    record = await table.find_request("r1")
    assert record is not None
    assert registry.get(record.resource_id).name == "web"
