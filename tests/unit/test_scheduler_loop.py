"""The scheduler loop: the eviction limiter on a fake clock, and `Scheduler.run_once` over real
registries on a SQLite store, with heartbeat sessions open for the nodes. No task is started:
each test runs passes by hand."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from controller.clock import FakeClock
from controller.errors import NotFoundError
from controller.models import (
    Capabilities,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    DesiredState,
    DrainState,
    Node,
    NodeSpec,
    NodeStatus,
    ReplicaState,
    Resources,
)
from controller.registry.deployments import DeploymentRegistry
from controller.registry.node_updates import DrainRequest, NodeChanges
from controller.registry.nodes import NodeRegistry
from controller.registry.replicas import Report
from controller.registry.sessions import Session, Sessions
from controller.scheduler import loop, placement
from controller.scheduler.loop import Evictions, Scheduler, SchedulerSettings
from controller.scheduler.placement import Ask, NodeView
from controller.scheduler.reconcile import Context
from controller.scheduler.reconcile import reconcile as reconcile_step
from controller.store.base import Store

# Evictions: a token bucket of nodes. Script steps: a number advances the clock; a node id asks
# whether that node may be evicted. Expected: the answers, in order.
EVICTIONS: dict[str, tuple[float, int, list[str | float], list[bool]]] = {
    # name: (rate per second, burst, script, answers)
    "a burst of nodes is admitted at once": (1, 2, ["a", "b"], [True, True]),
    "a node beyond the burst is refused": (1, 2, ["a", "b", "c"], [True, True, False]),
    "an admitted node stays admitted": (1, 1, ["a", "b", "a", "a"], [True, False, True, True]),
    "after the burst, nodes are admitted at the rate": (
        1,
        2,
        ["a", "b", "c", 1, "c", "d", 0.5, "d", 0.5, "d"],
        [True, True, False, True, False, False, True],
    ),
    "a slower rate admits later": (0.1, 1, ["a", "b", 9, "b", 1, "b"], [True, False, False, True]),
    "tokens do not pile up beyond the burst": (
        1,
        2,
        [1000, "a", "b", "c", "d"],
        [True, True, False, False],
    ),
    "no burst and no rate admits nothing": (0, 0, ["a", 1000, "a"], [False, False]),
}


def play(evictions: Evictions, clock: FakeClock, script: list[str | float]) -> list[bool]:
    answers: list[bool] = []
    for step in script:
        if isinstance(step, str):
            answers.append(evictions.may_evict(step))
        else:
            clock.advance(step)
    return answers


@pytest.mark.parametrize("name", EVICTIONS)
def test_evictions_are_a_token_bucket_of_nodes(name: str, clock: FakeClock) -> None:
    rate, burst, script, answers = EVICTIONS[name]
    assert play(Evictions(rate, burst, clock), clock, script) == answers


def test_paused_evictions_admit_no_node(clock: FakeClock) -> None:
    evictions = Evictions(1, 10, clock)
    evictions.paused = True
    assert play(evictions, clock, ["a", "b", 60, "c"]) == [False, False, False]
    evictions.paused = False
    assert play(evictions, clock, ["a", "b", "c"]) == [True, True, True]


def test_a_node_that_returned_must_be_admitted_again(clock: FakeClock) -> None:
    evictions = Evictions(1, 1, clock)
    assert play(evictions, clock, ["a", "a"]) == [True, True]
    evictions.forget_returned({"a", "zz"})
    assert play(evictions, clock, ["a", 1, "a"]) == [False, True]


# Scheduler.run_once on real registries


@dataclass
class Plane:
    """The control plane's scheduling half, with the clock and store it runs on."""

    clock: FakeClock
    store: Store
    nodes: NodeRegistry
    deployments: DeploymentRegistry
    sessions: Sessions
    scheduler: Scheduler
    open_sessions: dict[str, Session]

    async def node(self, cpu: float = 1, ready: bool = True) -> str:
        """Registers a node that fits `cpu` one-cpu replicas, opens its heartbeat session and,
        if `ready`, its stream (which makes it READY)."""
        spec = NodeSpec("aws", "https://n.example", "us-east-1", Capabilities(cpu, cpu, 10))
        node = await self.nodes.register(spec)
        self.open_sessions[node.id] = self.sessions.open(node.id)
        if ready:
            self.nodes.stream_opened(node.id)
        return node.id

    def told(self) -> set[str]:
        """The nodes whose sessions were told their assignments changed (and clears them)."""
        return {n for n, s in self.open_sessions.items() if s.take_push()}

    def status(self, node_id: str) -> NodeStatus | None:
        """The node's status as the scheduler sees it (staged, not yet persisted)."""
        return {n.id: n.status for n in self.nodes.latest()}.get(node_id)

    def take_offline(self, node_id: str) -> None:
        """The node's stream breaks and it stays silent until OFFLINE; the others keep beating."""
        self.nodes.stream_closed(node_id, "stream broke")
        for _ in range(3):
            self.clock.advance(5)
            for other in self.open_sessions:
                if other != node_id and self.status(other) is NodeStatus.READY:
                    self.nodes.beat(other)
            self.nodes.sweep()
        assert self.status(node_id) is NodeStatus.OFFLINE


async def make_plane(
    store: Store, clock: FakeClock, settings: SchedulerSettings | None = None
) -> Plane:
    nodes = NodeRegistry(store, clock)
    await nodes.load()
    deployments = DeploymentRegistry(store, clock)
    await deployments.load()
    sessions = Sessions()
    scheduler = Scheduler(
        deployments, nodes, sessions, clock, settings or SchedulerSettings(), random.Random(1)
    )
    return Plane(clock, store, nodes, deployments, sessions, scheduler, {})


@pytest_asyncio.fixture
async def plane(store: Store, clock: FakeClock) -> Plane:
    return await make_plane(store, clock)


def web(replicas: int = 2) -> DeploymentSpec:
    return DeploymentSpec(name="web", image="busybox", replicas=replicas, resources=Resources(1, 1))


async def test_a_pass_places_a_new_deployment_on_ready_nodes_and_tells_their_sessions(
    plane: Plane,
) -> None:
    a = await plane.node(cpu=4)
    b = await plane.node(cpu=4)
    waiting = await plane.node(cpu=4, ready=False)  # PENDING: never used
    dep = await plane.deployments.create(web(2))
    plane.told()

    await plane.scheduler.run_once()

    placed = plane.deployments.get(dep.id)
    assert sorted(placed.node_ids) == sorted([a, b])
    assert [r.state for r in placed.replica_set] == [ReplicaState.ASSIGNED] * 2
    assert (placed.status, placed.status_reason) == (
        DeploymentStatus.SCHEDULED,
        "0/2 replicas running",
    )
    assert plane.told() == {a, b}
    assert waiting not in placed.node_ids
    assert plane.scheduler.passes == 1


async def test_a_pass_persists_what_it_placed(plane: Plane) -> None:
    await plane.node()
    await plane.node()
    dep = await plane.deployments.create(web(2))
    await plane.scheduler.run_once()

    fresh = DeploymentRegistry(plane.store, plane.clock)
    await fresh.load()
    stored = fresh.get(dep.id)
    assert stored.replica_set == plane.deployments.get(dep.id).replica_set
    assert stored.status is DeploymentStatus.SCHEDULED
    assert stored.revision > dep.revision


async def test_a_pass_with_nothing_to_do_writes_nothing_and_tells_no_one(plane: Plane) -> None:
    await plane.node()
    dep = await plane.deployments.create(web(1))
    await plane.scheduler.run_once()
    plane.told()
    before = await plane.store.revision()

    await plane.scheduler.run_once()

    assert plane.told() == set()
    assert await plane.store.revision() == before
    assert plane.deployments.get(dep.id).revision == before


async def test_the_agent_s_reports_make_the_deployment_running(plane: Plane) -> None:
    a = await plane.node()
    dep = await plane.deployments.create(web(1))
    await plane.scheduler.run_once()
    plane.deployments.report(a, [Report(dep.id, 0, ReplicaState.RUNNING)])
    await plane.scheduler.run_once()

    fresh = DeploymentRegistry(plane.store, plane.clock)
    await fresh.load()
    for registry in (plane.deployments, fresh):
        running = registry.get(dep.id)
        assert (running.status, running.status_reason) == (
            DeploymentStatus.RUNNING,
            "1/1 replicas running",
        )


async def test_a_deployment_that_does_not_fit_is_placed_once_a_node_is_ready(
    plane: Plane,
) -> None:
    dep = await plane.deployments.create(web(1))
    await plane.scheduler.run_once()
    pending = plane.deployments.get(dep.id)
    assert (pending.status, pending.status_reason) == (
        DeploymentStatus.PENDING,
        "1 of 1 replicas not placed: no nodes are registered",
    )
    a = await plane.node(ready=False)
    await plane.scheduler.run_once()
    assert "1 are PENDING" in plane.deployments.get(dep.id).status_reason
    plane.nodes.stream_opened(a)
    await plane.scheduler.run_once()
    assert plane.deployments.get(dep.id).node_ids == (a,)
    assert plane.told() == {a}


async def test_the_replica_of_an_offline_node_moves_to_a_free_node(plane: Plane) -> None:
    a, b, c = await plane.node(), await plane.node(), await plane.node()
    dep = await plane.deployments.create(web(2))
    await plane.scheduler.run_once()
    placed = plane.deployments.get(dep.id).node_ids
    (free,) = {a, b, c} - set(placed)
    gone = placed[0]
    plane.told()

    plane.take_offline(gone)
    await plane.scheduler.run_once()

    moved = plane.deployments.get(dep.id)
    assert moved.node_ids == (free, placed[1])
    assert [(r.node_id, r.state) for r in moved.replica_set if r.superseded] == [
        (gone, ReplicaState.LOST)
    ]
    assert {gone, free} <= plane.told()


async def test_without_eviction_tokens_the_replica_of_an_offline_node_stays(
    store: Store, clock: FakeClock
) -> None:
    plane = await make_plane(
        store, clock, SchedulerSettings(eviction_rate_per_s=0, eviction_burst=0)
    )
    await plane.node(), await plane.node()
    dep = await plane.deployments.create(web(1))
    await plane.scheduler.run_once()
    placed = plane.deployments.get(dep.id)

    plane.take_offline(placed.node_ids[0])
    await plane.scheduler.run_once()

    assert plane.deployments.get(dep.id).replica_set == placed.replica_set


async def test_a_deleted_deployment_is_stopped_then_removed_once_its_agent_confirms(
    plane: Plane,
) -> None:
    a = await plane.node()
    dep = await plane.deployments.create(web(1))
    await plane.scheduler.run_once()
    plane.deployments.report(a, [Report(dep.id, 0, ReplicaState.RUNNING)])
    await plane.scheduler.run_once()
    plane.told()

    await plane.deployments.delete(dep.id)
    await plane.scheduler.run_once()
    stopping = plane.deployments.get(dep.id)
    assert [(r.state, r.desired) for r in stopping.replica_set] == [
        (ReplicaState.STOPPING, DesiredState.STOP)
    ]
    assert plane.told() == {a}
    assert [(d.id, r.desired) for d, r in plane.deployments.assignments(a)] == [
        (dep.id, DesiredState.STOP)
    ]

    plane.deployments.report(a, [Report(dep.id, 0, ReplicaState.STOPPED)])
    await plane.scheduler.run_once()
    with pytest.raises(NotFoundError):
        plane.deployments.get(dep.id)
    assert await plane.store.deployments.get(dep.id) is None
    assert plane.deployments.assignments(a) == []
    assert plane.told() == {a}


async def test_a_deleted_deployment_on_a_deleted_node_is_removed_at_once(plane: Plane) -> None:
    a = await plane.node()
    dep = await plane.deployments.create(web(1))
    await plane.scheduler.run_once()
    await plane.nodes.delete(a)
    await plane.deployments.delete(dep.id)
    await plane.scheduler.run_once()
    assert plane.deployments.snapshot_of(dep.id) is None


# Work per pass, counted (never timed): a spy on reconcile and one on placement's feasibility
# check, which is called once per node examined.


@dataclass
class Work:
    reconciled: list[str]  # deployment ids, in order
    examined: int = 0  # nodes examined by placement
    on_reconcile: Callable[[], None] = lambda: None


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Work:
    counted = Work([])
    check = placement._why_not

    def why_not(n: NodeView, a: Ask, free: Resources) -> str | None:
        counted.examined += 1
        return check(n, a, free)

    def reconcile(dep: Deployment, ctx: Context) -> tuple[Deployment, bool]:
        counted.on_reconcile()
        counted.reconciled.append(dep.id)
        return reconcile_step(dep, ctx)

    monkeypatch.setattr(placement, "_why_not", why_not)
    monkeypatch.setattr(loop, "reconcile", reconcile)
    return counted


def huge(name: str = "huge", replicas: int = 200) -> DeploymentSpec:
    """Fits on no node of these tests."""
    return DeploymentSpec(name=name, image="x", replicas=replicas, resources=Resources(64, 1))


async def test_a_deployment_that_fits_nowhere_costs_its_nodes_plus_its_replicas(
    plane: Plane, work: Work
) -> None:
    for _ in range(50):
        await plane.node()
    dep = await plane.deployments.create(huge(replicas=200))

    await plane.scheduler.run_once()

    assert "200 of 200 replicas not placed: no READY node with 64 cpu" in (
        plane.deployments.get(dep.id).status_reason
    )
    assert work.examined <= 2 * (50 + 200)  # not 200 replicas x 2 x 50 nodes


async def test_a_deployment_that_fits_nowhere_is_not_reconciled_on_a_tick_without_change(
    plane: Plane, work: Work
) -> None:
    for _ in range(5):
        await plane.node()
    await plane.deployments.create(huge())
    await plane.scheduler.run_once()  # says why it does not fit
    await plane.scheduler.run_once()  # finds nothing more to do
    before = (len(work.reconciled), work.examined)

    for _ in range(3):
        plane.clock.advance(1)
        await plane.scheduler.run_once()

    assert (len(work.reconciled), work.examined) == before


async def test_a_deployment_that_fits_nowhere_is_retried_when_a_node_joins(
    plane: Plane, work: Work
) -> None:
    await plane.node()
    dep = await plane.deployments.create(huge(replicas=1))
    await plane.scheduler.run_once()
    await plane.scheduler.run_once()
    before = len(work.reconciled)

    big = await plane.node(cpu=64, ready=False)  # joins PENDING: the reason counts it
    await plane.scheduler.run_once()
    assert len(work.reconciled) == before + 1
    assert "1 are PENDING" in plane.deployments.get(dep.id).status_reason

    plane.nodes.stream_opened(big)  # turns READY
    await plane.scheduler.run_once()
    assert plane.deployments.get(dep.id).node_ids == (big,)


async def test_a_deployment_that_fits_nowhere_is_retried_when_capacity_is_released(
    plane: Plane,
) -> None:
    a = await plane.node(cpu=1)
    first = await plane.deployments.create(web(1))
    await plane.scheduler.run_once()
    waiting = await plane.deployments.create(
        DeploymentSpec(name="second", image="x", replicas=1, resources=Resources(1, 1))
    )
    await plane.scheduler.run_once()
    await plane.scheduler.run_once()
    assert plane.deployments.get(waiting.id).node_ids == ()

    await plane.deployments.delete(first.id)
    await plane.scheduler.run_once()  # asks the agent to stop it
    plane.deployments.report(a, [Report(first.id, 0, ReplicaState.STOPPED)])
    await plane.scheduler.run_once()  # removes it: its cpu is free
    await plane.scheduler.run_once()

    assert plane.deployments.get(waiting.id).node_ids == (a,)


async def test_a_parked_deployment_is_reconciled_when_its_node_goes_offline(
    plane: Plane, work: Work
) -> None:
    a, b = await plane.node(), await plane.node()
    dep = await plane.deployments.create(web(1))
    await plane.scheduler.run_once()
    await plane.scheduler.run_once()
    (placed,) = plane.deployments.get(dep.id).node_ids
    before = len(work.reconciled)

    plane.take_offline(placed)
    await plane.scheduler.run_once()

    assert len(work.reconciled) > before
    assert plane.deployments.get(dep.id).node_ids == tuple({a, b} - {placed})


# A pass that yields: between two deployments it gives the event loop back, and what changed
# meanwhile is taken into account.


async def run_pass_yielding(
    plane: Plane, work: Work, meanwhile: Callable[[], Awaitable[None]]
) -> list[int]:
    """Runs a pass beside a task that counts its turns on the event loop and, on its first turn
    after the first deployment was reconciled, runs `meanwhile`. Returns the turn count at each
    reconcile."""
    turns = 0
    at: list[int] = []
    done = False
    acted = False

    async def other() -> None:
        nonlocal turns, acted
        while not done:
            await asyncio.sleep(0)
            turns += 1
            if at and not acted:
                acted = True
                await meanwhile()

    work.on_reconcile = lambda: at.append(turns)
    task = asyncio.create_task(other())
    try:
        await plane.scheduler.run_once()
    finally:
        done = True
        await task
    return at


@pytest_asyncio.fixture
async def sliced(store: Store, clock: FakeClock) -> Plane:
    """A plane whose passes yield between every two deployments."""
    return await make_plane(store, clock, SchedulerSettings(pass_slice_s=0))


async def nothing() -> None:
    return None


async def test_a_pass_yields_to_the_event_loop_between_deployments(
    sliced: Plane, work: Work
) -> None:
    for _ in range(3):
        await sliced.node(cpu=4)
    for i in range(4):
        await sliced.deployments.create(huge(f"d{i}", replicas=2))

    at = await run_pass_yielding(sliced, work, nothing)

    assert len(at) == 4
    assert len(set(at)) == 4  # another task ran between every two deployments
    assert sliced.scheduler.yields >= 3


async def test_a_node_that_leaves_while_a_pass_yields_gets_no_more_replicas(
    sliced: Plane, work: Work
) -> None:
    x = await sliced.node(cpu=10)
    deps = [await sliced.deployments.create(web_named(f"d{i}")) for i in range(3)]

    async def leave() -> None:
        sliced.nodes.stream_closed(x, "stream broke")  # SUSPECT: no longer READY

    await run_pass_yielding(sliced, work, leave)

    placed = [d.id for d in deps if sliced.deployments.get(d.id).node_ids]
    assert placed == [work.reconciled[0]]  # only the one reconciled before it left


async def test_a_change_made_while_a_pass_yields_is_not_overwritten(
    sliced: Plane, work: Work
) -> None:
    for _ in range(4):
        await sliced.node(cpu=4)
    deps = [await sliced.deployments.create(web_named(f"d{i}")) for i in range(2)]
    scaled: list[str] = []

    async def scale_the_other() -> None:
        (other,) = [d.id for d in deps if d.id not in work.reconciled]
        scaled.append(other)
        await sliced.deployments.update(
            other, DeploymentSpec(name="", image="", replicas=3), ["replicas"]
        )

    await run_pass_yielding(sliced, work, scale_the_other)
    await sliced.scheduler.run_once()

    after = sliced.deployments.get(scaled[0])
    assert after.replicas == 3
    assert len(after.node_ids) == 3


def web_named(name: str) -> DeploymentSpec:
    return DeploymentSpec(name=name, image="busybox", replicas=1, resources=Resources(1, 1))


async def test_with_no_deployment_and_no_drain_a_pass_reads_no_node(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet joining with no deployment (every node turning READY wakes a pass) costs no walk
    over the nodes per pass; a drain started then is still completed by the next pass."""
    walks = 0
    latest = plane.nodes.latest

    def counted() -> list[Node]:
        nonlocal walks
        walks += 1
        return latest()

    monkeypatch.setattr(plane.nodes, "latest", counted)
    for _ in range(5):
        await plane.node()
        await plane.scheduler.run_once()
    assert walks == 0

    drained = await plane.node()
    await plane.nodes.update(drained, NodeChanges(drain=DrainRequest(3600)), ["drain"])
    await plane.scheduler.run_once()

    assert walks > 0
    drain = plane.nodes.get(drained).drain
    assert drain is not None and drain.state is DrainState.COMPLETE, drain
