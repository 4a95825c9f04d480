"""Node drains (scheduler/drain.py) through the scheduler's reconcile step, on a fake clock.

A `Fleet` holds nodes and one deployment and plays the agents: after every scheduling step each
agent reports what it was told (a placement to run turns RUNNING, one to stop STOPPED). After
every step the test counts the replicas available (RUNNING and ready, current or a handover
still serving) and asserts the deployment's minimum (replicas - max_unavailable) was never
broken. Tables: room elsewhere or not, max_unavailable 0 or 1, the deadline, a node lost
mid-drain; and the progress a drain reports."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest

from controller.clock import FakeClock
from controller.models import (
    Capabilities,
    Deployment,
    DesiredState,
    Drain,
    DrainState,
    IntOrPercent,
    Node,
    NodeStatus,
    PlacementStrategy,
    Replica,
    ReplicaState,
    Resources,
    UpdateStrategy,
    frozen_map,
)
from controller.registry.replicas import Report, apply_report
from controller.scheduler import drain
from controller.scheduler.drainer import next_version
from controller.scheduler.placement import NodeView, Snapshot
from controller.scheduler.reconcile import Context, reconcile

READY, OFFLINE = NodeStatus.READY, NodeStatus.OFFLINE
RUNNING, STOPPED = ReplicaState.RUNNING, ReplicaState.STOPPED
RUN, STOP = DesiredState.RUN, DesiredState.STOP
ONE = Resources(1, 1, 0)
HOUR = timedelta(hours=1)


@dataclass
class Fleet:
    clock: FakeClock
    nodes: dict[str, NodeView] = field(default_factory=dict)
    drains: dict[str, datetime] = field(default_factory=dict)
    lowest_available: int = 10**6  # over every step

    def add(self, node_id: str, slots: int = 1) -> None:
        capacity = Resources(slots, slots, 100)
        self.nodes[node_id] = NodeView(node_id, READY, "p", "r", frozen_map(), capacity)

    def drain(self, node_id: str, timeout: timedelta = HOUR) -> None:
        self.nodes[node_id] = replace(self.nodes[node_id], schedulable=False)
        self.drains[node_id] = self.clock.now() + timeout

    def status(self, node_id: str) -> NodeStatus | None:
        node = self.nodes.get(node_id)
        return node.status if node is not None else None

    def step(self, dep: Deployment) -> Deployment:
        """One scheduling step, then every READY node's agent does and reports what it was
        told; records how many replicas were available after each half."""
        used: dict[str, Resources] = {}
        for r in dep.replica_set:
            if r.node_id and r.state not in (ReplicaState.PENDING, STOPPED):
                used[r.node_id] = used.get(r.node_id, Resources()).plus(dep.resources)
        ctx = Context(
            now=self.clock.now(),
            snapshot=Snapshot(list(self.nodes.values()), used),
            node_status=self.status,
            may_evict=lambda _: True,
            default_strategy=PlacementStrategy.SPREAD,
            rng=random.Random(0),
            drains=dict(self.drains),
        )
        dep, _ = reconcile(dep, ctx)
        self._observe(dep)
        for r in dep.replica_set:
            if not r.node_id or self.status(r.node_id) is not READY:
                continue
            state = RUNNING if r.desired is RUN else STOPPED
            report = Report(dep.id, r.index, state, placement_id=r.placement_id)
            dep = apply_report(dep, r.node_id, report, self.clock.now()) or dep
        self._observe(dep)
        self.clock.advance(1)
        return dep

    def _observe(self, dep: Deployment) -> None:
        up = sum(
            1
            for r in dep.replica_set
            if r.desired is RUN
            and r.state is RUNNING
            and r.ready_time is not None
            and r.index < dep.replicas
            and self.status(r.node_id) is READY
        )
        self.lowest_available = min(self.lowest_available, up)


def deployment(clock: FakeClock, replicas: int, unavailable: int = 0, surge: int = 1) -> Deployment:
    strategy = UpdateStrategy(
        max_unavailable=IntOrPercent(unavailable), max_surge=IntOrPercent(surge)
    )
    return Deployment(
        id="d1",
        name="web",
        create_time=clock.now(),
        update_time=clock.now(),
        image="busybox",
        resources=ONE,
        replicas=replicas,
        update_strategy=strategy,
    )


def on(dep: Deployment, node_id: str) -> list[Replica]:
    """Placements on `node_id` that still hold something there."""
    return [r for r in dep.replica_set if r.node_id == node_id and r.state not in drain.GONE]


def current_nodes(dep: Deployment) -> list[str]:
    return sorted(r.node_id for r in dep.replica_set if not r.superseded)


def settle(fleet: Fleet, dep: Deployment, steps: int = 10) -> Deployment:
    for _ in range(steps):
        dep = fleet.step(dep)
    return dep


@pytest.fixture
def fleet(clock: FakeClock) -> Fleet:
    return Fleet(clock)


@pytest.mark.parametrize(
    ("name", "replicas", "unavailable", "surge", "elsewhere", "minimum"),
    [
        ("room for all elsewhere, unavailable 0", 2, 0, 1, {"c": 2}, 2),
        ("room for all elsewhere, unavailable 1", 2, 1, 1, {"c": 2}, 1),
        ("room for all elsewhere, no surge, unavailable 1", 2, 1, 0, {"c": 2}, 1),
        ("room on two nodes", 3, 0, 1, {"c": 2, "d": 1}, 3),
        ("surge 2 moves two at once", 3, 0, 2, {"c": 3}, 3),
    ],
)
def test_a_drain_moves_everything_and_never_below_the_minimum(
    fleet: Fleet,
    name: str,
    replicas: int,
    unavailable: int,
    surge: int,
    elsewhere: dict[str, int],
    minimum: int,
) -> None:
    fleet.add("a", slots=replicas)
    for node_id, slots in elsewhere.items():
        fleet.add(node_id, slots)
    for node_id in elsewhere:  # everything starts on "a"
        fleet.nodes[node_id] = replace(fleet.nodes[node_id], schedulable=False)
    dep = settle(fleet, deployment(fleet.clock, replicas, unavailable, surge), 3)
    assert current_nodes(dep) == ["a"] * replicas
    for node_id in elsewhere:
        fleet.nodes[node_id] = replace(fleet.nodes[node_id], schedulable=True)
    fleet.lowest_available = replicas

    fleet.drain("a")
    dep = settle(fleet, dep, 12)

    assert on(dep, "a") == [], name
    assert "a" not in current_nodes(dep) and len(current_nodes(dep)) == replicas
    assert fleet.lowest_available >= minimum, name


def test_without_room_elsewhere_replicas_stay_until_the_deadline_then_stop(
    fleet: Fleet,
) -> None:
    fleet.add("a", slots=2)
    dep = settle(fleet, deployment(fleet.clock, 2), 3)
    fleet.lowest_available = 2
    fleet.drain("a", timeout=timedelta(seconds=30))

    dep = settle(fleet, dep, 10)

    assert len(on(dep, "a")) == 2  # nowhere to go: they keep serving
    assert fleet.lowest_available == 2
    # One surge (max_surge 1) waits for room and counts against the surge, pending as it is:
    # the other replica has not started moving (nothing may go down: max_unavailable 0).
    current = [r for r in dep.replica_set if not r.superseded]
    assert sorted(r.node_id for r in current) == ["", "a"]
    assert "cordoned" in next(r for r in current if not r.node_id).message
    on_node, waiting, why = drain.remaining((dep, r) for r in dep.replica_set if r.node_id == "a")
    assert (on_node, waiting) == (2, 1) and "cordoned" in why

    dep = settle(fleet, dep, 25)  # past the deadline

    assert on(dep, "a") == []
    assert all(r.desired is STOP for r in dep.replica_set if r.node_id == "a")


def test_at_the_deadline_the_rest_stop_and_their_replacements_go_where_they_fit(
    fleet: Fleet,
) -> None:
    fleet.add("a", slots=2)
    fleet.add("b", slots=2)
    fleet.nodes["b"] = replace(fleet.nodes["b"], schedulable=False)
    dep = settle(fleet, deployment(fleet.clock, 2), 3)
    fleet.drain("a", timeout=timedelta(seconds=0))  # Nomad's -force: stop everything now
    fleet.nodes["b"] = replace(fleet.nodes["b"], schedulable=True)

    after = fleet.step(dep)

    assert on(after, "a") == []
    assert current_nodes(after) == ["b", "b"]
    moves = drain.moves(dep, after, fleet.drains, fleet.clock.now())
    assert moves == {"a": drain.Moves(moved=0, stopped=2)}


def test_a_node_lost_mid_drain_has_its_replicas_replaced_and_the_drain_completes(
    fleet: Fleet,
) -> None:
    fleet.add("a", slots=3)
    fleet.add("b", slots=3)
    fleet.nodes["b"] = replace(fleet.nodes["b"], schedulable=False)
    dep = settle(fleet, deployment(fleet.clock, 3), 3)
    fleet.nodes["b"] = replace(fleet.nodes["b"], schedulable=True)
    fleet.drain("a")
    dep = fleet.step(dep)  # one replica on its way

    fleet.nodes["a"] = replace(fleet.nodes["a"], status=OFFLINE)
    dep = settle(fleet, dep, 8)

    assert on(dep, "a") == []
    assert current_nodes(dep) == ["b", "b", "b"]


def test_a_drain_moves_nothing_of_a_node_that_is_not_draining(fleet: Fleet) -> None:
    fleet.add("a", slots=2)
    fleet.add("b", slots=2)
    dep = settle(fleet, deployment(fleet.clock, 2), 3)
    placed = current_nodes(dep)

    fleet.drains["c"] = fleet.clock.now() + HOUR  # another node drains
    dep = settle(fleet, dep, 3)

    assert current_nodes(dep) == placed
    assert not any(r.superseded for r in dep.replica_set)


T0 = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


@pytest.mark.parametrize(
    ("name", "on_node", "waiting", "done", "expect_state", "expect_message"),
    [
        ("in progress", 2, 0, drain.Moves(1, 0), DrainState.DRAINING, "2 replicas left"),
        ("waiting for room", 1, 1, drain.Moves(), DrainState.DRAINING, "1 wait for room"),
        ("done", 0, 0, drain.Moves(2, 1), DrainState.COMPLETE, "3 replicas moved, 1 stopped"),
    ],
)
def test_the_progress_a_drain_reports(
    name: str,
    on_node: int,
    waiting: int,
    done: drain.Moves,
    expect_state: DrainState,
    expect_message: str,
) -> None:
    before = Drain(T0, T0 + HOUR, moved=1)

    after = drain.progress(before, on_node, waiting, done, T0 + timedelta(seconds=5))

    assert after.state is expect_state, name
    assert (after.remaining, after.moved, after.stopped) == (
        on_node,
        1 + done.moved,
        done.stopped,
    )
    assert expect_message in after.message
    assert (after.end_time is not None) is (expect_state is DrainState.COMPLETE)


@pytest.mark.parametrize(
    ("status", "past_deadline", "expect"),
    [
        (READY, False, DrainState.DRAINING),
        (READY, True, DrainState.DRAINING),  # the stops are on their way: its agent confirms
        (OFFLINE, False, DrainState.DRAINING),  # its replicas are being replaced as lost
        (OFFLINE, True, DrainState.COMPLETE),  # no agent will confirm anything: over
    ],
)
def test_a_drain_whose_node_went_offline_completes_at_its_deadline(
    status: NodeStatus, past_deadline: bool, expect: DrainState
) -> None:
    node = Node(
        id="n1",
        provider="p",
        endpoint="e",
        region="r",
        capabilities=Capabilities(4, 4),
        create_time=T0,
        update_time=T0,
        status=status,
        unschedulable=True,
        drain=Drain(T0, T0 + HOUR),
    )
    now = T0 + (2 * HOUR if past_deadline else timedelta(minutes=1))

    reported = next_version(2, 1, "no room", drain.Moves(), now, node)

    assert reported is not None and reported.drain is not None
    assert reported.drain.state is expect


@pytest.mark.parametrize(
    ("name", "replicas", "unavailable", "surge"),
    [
        ("surge 1, none down", 3, 0, 1),
        ("surge 2, none down", 3, 0, 2),
        ("surge 1, one down", 3, 1, 1),
    ],
)
def test_room_for_every_move_at_once_never_runs_more_than_the_surge(
    fleet: Fleet, name: str, replicas: int, unavailable: int, surge: int
) -> None:
    """A drain's replacements that wait for room count against max_surge, so room that
    appears for all at once starts no more than replicas + max_surge; the drain completes."""
    fleet.add("a", slots=replicas)
    dep = settle(fleet, deployment(fleet.clock, replicas, unavailable, surge), 3)
    fleet.lowest_available = replicas
    fleet.drain("a")
    most = 0
    for _ in range(5):  # nowhere to go: they wait
        dep = fleet.step(dep)
        most = max(most, sum(1 for r in dep.replica_set if r.desired is RUN))
    fleet.add("c", slots=replicas)  # room for every one at once
    for _ in range(15):
        dep = fleet.step(dep)
        most = max(most, sum(1 for r in dep.replica_set if r.desired is RUN))

    assert most <= replicas + surge
    assert on(dep, "a") == []
    assert current_nodes(dep) == ["c"] * replicas
    assert fleet.lowest_available >= replicas - unavailable


def test_a_drain_of_a_full_cluster_completes_at_its_deadline(fleet: Fleet) -> None:
    fleet.add("a", slots=2)
    fleet.add("b", slots=2)
    dep = settle(fleet, deployment(fleet.clock, 4, unavailable=1), 3)
    fleet.lowest_available = 4
    fleet.drain("a", timeout=timedelta(seconds=20))

    dep = settle(fleet, dep, 15)
    # Full: nothing can move before the deadline; one stopped first (max_unavailable 1), its
    # replacement pending.
    assert len(on(dep, "a")) == 1
    assert fleet.lowest_available == 3
    dep = settle(fleet, dep, 15)

    placements = [(dep, r) for r in dep.replica_set if r.node_id == "a"]
    on_node, waiting, _ = drain.remaining(placements)
    assert on_node == 0 and on(dep, "a") == []
    node = Node(
        id="a",
        provider="p",
        endpoint="e",
        region="r",
        capabilities=Capabilities(2, 2),
        create_time=T0,
        update_time=T0,
        unschedulable=True,
        drain=Drain(T0, T0 + HOUR),
    )
    reported = next_version(on_node, waiting, "", drain.Moves(stopped=2), T0, node)
    assert reported is not None and reported.drain is not None
    assert reported.drain.state is DrainState.COMPLETE
