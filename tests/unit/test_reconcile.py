"""What one scheduling step does to one deployment, on a fixed fake clock.

A `World` holds the nodes and builds each step's context the way the scheduler loop does (what
is placed is not free; a node missing from the world is gone). Agents are played by hand:
`World.agent()` applies a report as the registry would. Unless a test says otherwise, nodes fit one
replica each, so where replicas go is decided by capacity, not by the random sample."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest

from controller.clock import FakeClock
from controller.models import (
    Deployment,
    DeploymentStatus,
    DesiredState,
    NodeStatus,
    PlacementStrategy,
    Replica,
    ReplicaState,
    Resources,
    frozen_map,
)
from controller.registry.replicas import MAX_FAILURES, Report, apply_report
from controller.scheduler.placement import NodeView, Snapshot
from controller.scheduler.reconcile import (
    FORGIVE_AFTER_S,
    MAX_BACKOFF_S,
    Context,
    backoff_s,
    reconcile,
)

READY, OFFLINE, SUSPECT = NodeStatus.READY, NodeStatus.OFFLINE, NodeStatus.SUSPECT
PENDING, ASSIGNED, RUNNING = ReplicaState.PENDING, ReplicaState.ASSIGNED, ReplicaState.RUNNING
STOPPING, STOPPED, LOST = ReplicaState.STOPPING, ReplicaState.STOPPED, ReplicaState.LOST
FAILED, EXITED = ReplicaState.FAILED, ReplicaState.EXITED
RUN, STOP = DesiredState.RUN, DesiredState.STOP
DEFAULT, SPREAD, BINPACK = (
    PlacementStrategy.DEFAULT,
    PlacementStrategy.SPREAD,
    PlacementStrategy.BINPACK,
)
ONE = Resources(1, 1, 0)  # what each replica asks for
FREE = frozenset({PENDING, STOPPED, FAILED, EXITED})  # as the scheduler loop counts


def always(_: str) -> bool:
    return True


@dataclass
class World:
    clock: FakeClock
    nodes: dict[str, NodeView] = field(default_factory=dict)
    evict: Callable[[str], bool] = always
    strategy: PlacementStrategy = PlacementStrategy.SPREAD
    seed: int = 0
    stop_timeout_s: float = 30.0
    asked_to_evict: list[str] = field(default_factory=list)

    def add(self, node_id: str, status: NodeStatus = READY, cpu: float = 1) -> None:
        self.nodes[node_id] = NodeView(
            node_id, status, "aws", "us-east-1", frozen_map(), Resources(cpu, cpu, 100)
        )

    def set(self, node_id: str, status: NodeStatus) -> None:
        self.nodes[node_id] = replace(self.nodes[node_id], status=status)

    def remove(self, node_id: str) -> None:
        del self.nodes[node_id]

    def status(self, node_id: str) -> NodeStatus | None:
        node = self.nodes.get(node_id)
        return node.status if node else None

    def may_evict(self, node_id: str) -> bool:
        self.asked_to_evict.append(node_id)
        return self.evict(node_id)

    def context(self, dep: Deployment) -> Context:
        used: dict[str, Resources] = {}
        for r in dep.replica_set:
            if r.node_id and r.state not in FREE:
                used[r.node_id] = used.get(r.node_id, Resources()).plus(dep.resources)
        return Context(
            now=self.clock.now(),
            snapshot=Snapshot(list(self.nodes.values()), used),
            node_status=self.status,
            may_evict=self.may_evict,
            default_strategy=self.strategy,
            rng=random.Random(self.seed),
            stop_timeout_s=self.stop_timeout_s,
        )

    def step(self, dep: Deployment) -> Deployment:
        new, _ = reconcile(dep, self.context(dep))
        return new

    def agent(
        self, dep: Deployment, node_id: str, index: int, state: ReplicaState, msg: str = ""
    ) -> Deployment:
        """`node_id`'s agent reports replica `index` in `state` (as DeploymentRegistry.report)."""
        report = Report(dep.id, index, state, msg)
        return apply_report(dep, node_id, report, self.clock.now()) or dep

    def run_all(self, dep: Deployment) -> Deployment:
        """Every placed, current replica's agent reports it RUNNING."""
        for r in dep.replica_set:
            if r.node_id and not r.superseded:
                dep = self.agent(dep, r.node_id, r.index, RUNNING)
        return dep


@pytest.fixture
def world(clock: FakeClock) -> World:
    return World(clock)


def deployment(clock: FakeClock, replicas: int = 1) -> Deployment:
    return Deployment(
        id="d1",
        name="web",
        create_time=clock.now(),
        update_time=clock.now(),
        image="busybox",
        resources=ONE,
        replicas=replicas,
        status_reason="waiting to be scheduled",
    )


def placed(dep: Deployment) -> list[tuple[int, str, ReplicaState]]:
    """(index, node, state) of each current placement."""
    return [(r.index, r.node_id, r.state) for r in dep.replica_set if not r.superseded]


def superseded(dep: Deployment) -> list[tuple[int, str, ReplicaState, DesiredState]]:
    return [(r.index, r.node_id, r.state, r.desired) for r in dep.replica_set if r.superseded]


def running_on(world: World, *node_ids: str) -> Deployment:
    """A deployment with replica i placed on node_ids[i] and RUNNING there."""
    for node_id in node_ids:
        if node_id not in world.nodes:
            world.add(node_id)
    dep = deployment(world.clock, len(node_ids))
    dep = replace(
        dep,
        replica_set=tuple(
            Replica(i, n, ASSIGNED, state_time=world.clock.now()) for i, n in enumerate(node_ids)
        ),
    )
    dep = world.step(world.run_all(dep))
    assert placed(dep) == [(i, n, RUNNING) for i, n in enumerate(node_ids)]
    return dep


# Placing a new deployment


def test_a_new_deployment_gets_its_replicas_placed_on_distinct_nodes(world: World) -> None:
    world.add("a", cpu=8)
    world.add("b", cpu=8)
    dep = world.step(deployment(world.clock, 2))
    assert sorted(n for _, n, _ in placed(dep)) == ["a", "b"]
    assert [s for _, _, s in placed(dep)] == [ASSIGNED, ASSIGNED]
    assert all(r.desired is RUN and r.state_time == world.clock.now() for r in dep.replica_set)
    assert (dep.status, dep.status_reason) == (DeploymentStatus.SCHEDULED, "0/2 replicas running")
    assert dep.history[-1].time == world.clock.now()


def test_three_replicas_spread_over_three_nodes_for_any_seed(clock: FakeClock) -> None:
    spread: Counter[int] = Counter()
    for seed in range(20):
        world = World(clock, seed=seed)
        for node_id in "abc":
            world.add(node_id, cpu=8)
        dep = world.step(deployment(clock, 3))
        spread[len({n for _, n, _ in placed(dep)})] += 1
    assert spread == {3: 20}


# name: (the deployment's strategy, the controller's default) -> the node chosen
STRATEGIES: dict[str, tuple[PlacementStrategy, PlacementStrategy, str]] = {
    "the default strategy spreads": (DEFAULT, SPREAD, "big"),
    "the default strategy bin-packs": (DEFAULT, BINPACK, "small"),
    "the deployment's own strategy wins over the default": (SPREAD, BINPACK, "big"),
}


@pytest.mark.parametrize("name", STRATEGIES)
def test_the_strategy_is_the_deployment_s_or_else_the_controller_s(world: World, name: str) -> None:
    own, default, expected = STRATEGIES[name]
    world.strategy = default
    world.add("small", cpu=2)  # half used by one replica
    world.add("big", cpu=8)
    dep = world.step(replace(deployment(world.clock), strategy=own))
    assert placed(dep) == [(0, expected, ASSIGNED)]


def test_placement_is_deterministic_for_a_seed(clock: FakeClock) -> None:
    def place_with(seed: int) -> list[tuple[int, str, ReplicaState]]:
        world = World(clock, seed=seed)
        for i in range(40):
            world.add(f"n{i}", cpu=8)
        return placed(world.step(deployment(clock, 5)))

    assert place_with(3) == place_with(3)


def test_replicas_are_running_when_their_agents_say_so(world: World) -> None:
    world.add("a")
    world.add("b")
    dep = world.step(deployment(world.clock, 2))
    dep = world.agent(dep, placed(dep)[0][1], 0, RUNNING)
    dep = world.step(dep)
    assert (dep.status, dep.status_reason) == (DeploymentStatus.SCHEDULED, "1/2 replicas running")
    world.clock.advance(3)
    dep = world.step(world.run_all(dep))
    assert (dep.status, dep.status_reason) == (DeploymentStatus.RUNNING, "2/2 replicas running")
    assert [(h.status, h.time) for h in dep.history] == [
        (DeploymentStatus.SCHEDULED, world.clock.now() - timedelta(seconds=3)),
        (DeploymentStatus.RUNNING, world.clock.now()),
    ]


def test_a_step_that_changes_nothing_returns_the_same_deployment(world: World) -> None:
    dep = running_on(world, "a", "b")
    again, done = reconcile(dep, world.context(dep))
    assert again is dep
    assert not done


def test_without_nodes_replicas_stay_pending_with_the_reason(world: World) -> None:
    dep = world.step(deployment(world.clock, 3))
    assert placed(dep) == [(0, "", PENDING), (1, "", PENDING), (2, "", PENDING)]
    assert {r.message for r in dep.replica_set} == {"no nodes are registered"}
    assert (dep.status, dep.status_reason) == (
        DeploymentStatus.PENDING,
        "3 of 3 replicas not placed: no nodes are registered",
    )


def test_a_replica_that_does_not_fit_is_placed_once_capacity_appears(world: World) -> None:
    world.add("a")
    world.add("b", OFFLINE)
    dep = world.step(deployment(world.clock, 2))
    assert placed(dep) == [(0, "a", ASSIGNED), (1, "", PENDING)]
    reason = "no READY node with 1 cpu, 1 GiB memory, 0 GiB disk free: 1 lack cpu, 1 are OFFLINE"
    assert dep.replica_set[1].message == reason
    assert dep.status_reason == f"1 of 2 replicas not placed: {reason}"
    assert world.step(dep) is dep  # nothing new: nothing changes
    world.set("b", READY)
    dep = world.step(dep)
    assert placed(dep) == [(0, "a", ASSIGNED), (1, "b", ASSIGNED)]
    assert dep.replica_set[1].message == ""
    assert dep.status is DeploymentStatus.SCHEDULED


# Nodes that go away


EVICTIONS: dict[str, tuple[bool, list[tuple[int, str, ReplicaState]], list[object]]] = {
    # name: (may_evict answers, current placements after, superseded after)
    "a replica on an OFFLINE node is replaced when eviction is allowed": (
        True,
        [(0, "b", ASSIGNED)],
        [(0, "a", LOST, RUN)],
    ),
    "a replica on an OFFLINE node stays when eviction is refused": (
        False,
        [(0, "a", RUNNING)],
        [],
    ),
}


@pytest.mark.parametrize("name", EVICTIONS)
def test_replicas_of_an_offline_node_are_replaced_only_when_eviction_allows(
    world: World, name: str
) -> None:
    allowed, current, old = EVICTIONS[name]
    world.add("b")
    dep = running_on(world, "a")
    world.set("a", OFFLINE)
    world.evict = lambda _: allowed
    dep = world.step(dep)
    assert world.asked_to_evict == ["a"]
    assert placed(dep) == current
    assert superseded(dep) == old


def test_a_lost_replica_says_why(world: World) -> None:
    world.add("b")
    dep = running_on(world, "a")
    world.set("a", OFFLINE)
    dep = world.step(dep)
    lost = next(r for r in dep.replica_set if r.superseded)
    assert (lost.message, lost.state_time) == ("its node went OFFLINE", world.clock.now())


@pytest.mark.parametrize("status", [SUSPECT, NodeStatus.PENDING])
def test_a_replica_on_a_node_that_is_not_offline_is_not_replaced(
    world: World, status: NodeStatus
) -> None:
    world.add("b")
    dep = running_on(world, "a")
    world.set("a", status)
    assert world.step(dep) is dep
    assert world.asked_to_evict == []


def test_when_nothing_else_fits_a_lost_replica_s_replacement_waits_with_the_reason(
    world: World,
) -> None:
    dep = running_on(world, "a")
    world.set("a", OFFLINE)
    dep = world.step(dep)
    assert placed(dep) == [(0, "", PENDING)]
    assert superseded(dep) == [(0, "a", LOST, RUN)]
    assert dep.status is DeploymentStatus.PENDING
    assert "1 are OFFLINE" in dep.status_reason


def test_a_replica_whose_node_was_deleted_is_replaced(world: World) -> None:
    world.add("b")
    dep = running_on(world, "a")
    world.remove("a")
    dep = world.step(dep)
    assert placed(dep) == [(0, "b", ASSIGNED)]
    assert superseded(dep) == []
    assert world.asked_to_evict == []


def test_a_replica_whose_node_was_deleted_waits_with_the_reason_when_nothing_fits(
    world: World,
) -> None:
    dep = running_on(world, "a")
    world.remove("a")
    dep = world.step(dep)
    assert placed(dep) == [(0, "", PENDING)]
    assert dep.replica_set[0].message == "no nodes are registered"


# name: (node a's status, the replacement's state on b) -> what becomes of the original on a
SUPERSEDED: dict[str, tuple[NodeStatus | None, ReplicaState, list[object]]] = {
    "kept while its replacement is not running": (OFFLINE, ASSIGNED, [(0, "a", LOST, RUN)]),
    "kept while its node is back but the replacement is not running": (
        READY,
        ASSIGNED,
        [(0, "a", LOST, RUN)],
    ),
    "told to stop once the replacement runs and its node is READY": (
        READY,
        RUNNING,
        [(0, "a", STOPPING, STOP)],
    ),
    "dropped once the replacement runs if its node is not READY": (OFFLINE, RUNNING, []),
    "dropped once the replacement runs if its node is SUSPECT": (SUSPECT, RUNNING, []),
    "dropped if its node was deleted": (None, ASSIGNED, []),
}


@pytest.mark.parametrize("name", SUPERSEDED)
def test_a_superseded_replica_is_stopped_only_after_its_replacement_runs(
    world: World, name: str
) -> None:
    status, replacement, expected = SUPERSEDED[name]
    world.add("b")
    dep = running_on(world, "a")
    world.set("a", OFFLINE)
    dep = world.step(dep)
    assert placed(dep) == [(0, "b", ASSIGNED)]
    dep = world.agent(dep, "b", 0, replacement)
    if status is None:
        world.remove("a")
    else:
        world.set("a", status)
    world.clock.advance(1)
    dep = world.step(dep)
    assert placed(dep) == [(0, "b", replacement)]
    assert superseded(dep) == expected


def test_a_superseded_replica_told_to_stop_is_dropped_once_its_agent_stopped_it(
    world: World,
) -> None:
    world.add("b")
    dep = running_on(world, "a")
    world.set("a", OFFLINE)
    dep = world.step(dep)
    dep = world.agent(dep, "b", 0, RUNNING)
    world.set("a", READY)
    dep = world.step(dep)
    assert superseded(dep) == [(0, "a", STOPPING, STOP)]
    assert world.step(dep) is dep  # waiting for the agent
    dep = world.agent(dep, "a", 0, RUNNING)  # still running: reported as stopping
    assert superseded(dep) == [(0, "a", STOPPING, STOP)]
    dep = world.step(world.agent(dep, "a", 0, STOPPED))
    assert superseded(dep) == []
    assert placed(dep) == [(0, "b", RUNNING)]
    assert dep.status is DeploymentStatus.RUNNING


def test_a_node_that_returns_before_the_replacement_is_placed_gets_its_replica_back(
    world: World,
) -> None:
    dep = running_on(world, "a")
    world.set("a", OFFLINE)
    dep = world.step(dep)
    assert placed(dep) == [(0, "", PENDING)]
    world.set("a", READY)
    dep = world.agent(dep, "a", 0, RUNNING)  # its agent reconnects and reports the replica
    dep = world.step(dep)
    assert placed(dep) == [(0, "a", RUNNING)]
    assert superseded(dep) == []
    assert dep.replica_set[0].message == "its node came back"
    assert dep.status is DeploymentStatus.RUNNING


def test_a_returning_node_never_holds_two_placements_of_one_replica(world: World) -> None:
    dep = running_on(world, "a")
    world.nodes["a"] = replace(world.nodes["a"], capacity=Resources(4, 4, 100))
    world.set("a", OFFLINE)
    world.add("b", cpu=0.5)  # too small: the replacement waits
    dep = world.step(dep)
    assert placed(dep) == [(0, "", PENDING)]
    world.set("a", READY)  # back, but its agent has not reported yet
    dep = world.step(dep)
    dep = world.step(world.agent(dep, "a", 0, RUNNING))
    on_a = [(r.state, r.superseded) for r in dep.replica_set if r.node_id == "a"]
    assert on_a == [(RUNNING, False)]
    assert dep.status is DeploymentStatus.RUNNING


# Failures and backoff


def test_backoff_doubles_from_one_second_up_to_five_minutes_with_jitter() -> None:
    rng = random.Random(5)
    for failures, base in [(0, 1), (1, 1), (2, 2), (3, 4), (6, 32), (9, 256), (10, 300), (60, 300)]:
        for _ in range(20):
            assert 0.8 * base <= backoff_s(failures, rng) <= 1.2 * base
    assert MAX_BACKOFF_S == 300


@pytest.mark.parametrize("ended", [FAILED, EXITED])
def test_a_failed_replica_is_placed_again_after_a_backoff_avoiding_its_node(
    world: World, ended: ReplicaState
) -> None:
    world.add("a", cpu=8)  # the emptier node: spread would pick it again
    world.add("b", cpu=2)
    dep = world.step(deployment(world.clock))
    assert placed(dep) == [(0, "a", ASSIGNED)]
    dep = world.step(world.agent(world.agent(dep, "a", 0, RUNNING), "a", 0, ended, "boom"))
    (r,) = dep.replica_set
    assert (r.node_id, r.state, r.failures, r.avoid) == ("", PENDING, 1, ("a",))
    assert r.retry_at is not None
    assert 0.8 <= (r.retry_at - world.clock.now()).total_seconds() <= 1.2
    assert r.message.startswith(f"{ended.value.lower()}: boom; placing it again in ")
    assert dep.status is DeploymentStatus.PENDING
    world.clock.advance(0.7)
    assert world.step(dep) is dep  # not before its time
    world.clock.advance(0.6)
    dep = world.step(dep)
    assert placed(dep) == [(0, "b", ASSIGNED)]
    assert (dep.replica_set[0].retry_at, dep.replica_set[0].failures) == (None, 1)


def test_a_failed_replica_goes_back_to_its_node_if_no_other_fits(world: World) -> None:
    dep = running_on(world, "a")
    dep = world.step(world.agent(dep, "a", 0, FAILED, "boom"))
    world.clock.advance(2)
    dep = world.step(dep)
    assert placed(dep) == [(0, "a", ASSIGNED)]
    assert dep.replica_set[0].avoid == ("a",)


def test_each_failure_backs_off_longer_and_the_deployment_fails_at_max_failures(
    world: World,
) -> None:
    world.add("a")
    world.add("b")
    dep = world.step(deployment(world.clock))
    waits: list[float] = []
    for failure in range(1, MAX_FAILURES + 1):
        ((_, node_id, _),) = placed(dep)
        dep = world.agent(dep, node_id, 0, RUNNING)
        dep = world.step(world.agent(dep, node_id, 0, FAILED, "oom"))
        (r,) = dep.replica_set
        assert r.retry_at is not None
        assert r.failures == failure
        waits.append((r.retry_at - world.clock.now()).total_seconds())
        if failure < MAX_FAILURES:
            assert dep.status is DeploymentStatus.PENDING
        world.clock.advance(MAX_BACKOFF_S * 2)
        dep = world.step(dep)
        if failure == 1:  # the only node it has not failed on
            assert placed(dep) == [(0, "b" if node_id == "a" else "a", ASSIGNED)]
    assert all(0.8 <= wait / 2**i <= 1.2 for i, wait in enumerate(waits)), waits
    assert dep.status is DeploymentStatus.FAILED
    assert dep.status_reason == f"replica 0 failed {MAX_FAILURES} times in a row"
    assert sorted(dep.replica_set[0].avoid) == ["a", "b"]


def test_the_reason_of_a_failed_deployment_names_the_last_failure(world: World) -> None:
    dep = running_on(world, "a")
    dep = replace(dep, replica_set=(replace(dep.replica_set[0], failures=MAX_FAILURES - 1),))
    dep = world.step(world.agent(dep, "a", 0, FAILED, "oom"))
    assert dep.status is DeploymentStatus.FAILED
    assert dep.status_reason.startswith(
        f"replica 0 failed {MAX_FAILURES} times in a row: failed: oom; placing it again in "
    )


FORGIVENESS: dict[str, tuple[float, int]] = {
    # name: (seconds running, failures after)
    "a replica running a moment keeps its failures": (1, 3),
    "a replica running just short of the limit keeps its failures": (FORGIVE_AFTER_S - 1, 3),
    "a replica running long enough has its failures forgiven": (FORGIVE_AFTER_S, 0),
}


@pytest.mark.parametrize("name", FORGIVENESS)
def test_a_running_replica_s_failures_are_forgiven_after_a_while(world: World, name: str) -> None:
    seconds, failures = FORGIVENESS[name]
    dep = running_on(world, "a")
    dep = replace(dep, replica_set=(replace(dep.replica_set[0], failures=3),))
    world.clock.advance(seconds)
    assert world.step(dep).replica_set[0].failures == failures


def test_a_failed_deployment_runs_again_once_its_replica_is_forgiven(world: World) -> None:
    dep = running_on(world, "a")
    dep = replace(dep, replica_set=(replace(dep.replica_set[0], failures=MAX_FAILURES),))
    dep = world.step(dep)
    assert dep.status is DeploymentStatus.FAILED
    world.clock.advance(FORGIVE_AFTER_S)
    dep = world.step(dep)
    assert (dep.status, dep.status_reason) == (DeploymentStatus.RUNNING, "1/1 replicas running")


# Scaling


def test_scaling_up_places_the_new_replicas(world: World) -> None:
    world.add("c")
    dep = running_on(world, "a", "b")
    dep = world.step(replace(dep, replicas=3))
    assert placed(dep) == [(0, "a", RUNNING), (1, "b", RUNNING), (2, "c", ASSIGNED)]
    assert (dep.status, dep.status_reason) == (DeploymentStatus.SCHEDULED, "2/3 replicas running")


def test_scaling_down_stops_the_extra_replicas_then_drops_them_once_stopped(
    world: World,
) -> None:
    dep = running_on(world, "a", "b", "c")
    dep = world.step(replace(dep, replicas=1))
    assert [(r.index, r.state, r.desired) for r in dep.replica_set] == [
        (0, RUNNING, RUN),
        (1, STOPPING, STOP),
        (2, STOPPING, STOP),
    ]
    assert (dep.status, dep.status_reason) == (DeploymentStatus.RUNNING, "1/1 replicas running")
    dep = world.step(world.agent(dep, "b", 1, STOPPED))
    assert placed(dep) == [(0, "a", RUNNING), (2, "c", STOPPING)]
    world.set("c", OFFLINE)  # not in any assignment now: its agent stops it if it returns
    dep = world.step(dep)
    assert placed(dep) == [(0, "a", RUNNING)]


def test_scaling_down_drops_unplaced_replicas_at_once(world: World) -> None:
    dep = running_on(world, "a")
    dep = world.step(replace(dep, replicas=3))
    assert placed(dep) == [(0, "a", RUNNING), (1, "", PENDING), (2, "", PENDING)]
    dep = world.step(replace(dep, replicas=1))
    assert placed(dep) == [(0, "a", RUNNING)]
    assert dep.status is DeploymentStatus.RUNNING


def test_scaling_down_drops_failed_replicas_at_once(world: World) -> None:
    dep = running_on(world, "a", "b")
    dep = world.agent(dep, "b", 1, FAILED, "boom")
    dep = world.step(replace(dep, replicas=1))
    assert placed(dep) == [(0, "a", RUNNING)]


def test_scaling_down_stops_superseded_replicas_of_dropped_indexes(world: World) -> None:
    world.add("c")
    dep = running_on(world, "a", "b")
    world.set("b", OFFLINE)
    dep = world.step(dep)
    assert placed(dep) == [(0, "a", RUNNING), (1, "c", ASSIGNED)]
    world.set("b", READY)
    dep = world.step(replace(dep, replicas=1))
    assert superseded(dep) == [(1, "b", STOPPING, STOP)]
    assert placed(dep) == [(0, "a", RUNNING), (1, "c", STOPPING)]


def test_scaling_back_up_before_a_stop_completes_runs_the_replica_again(world: World) -> None:
    dep = running_on(world, "a", "b", "c")
    dep = world.step(replace(dep, replicas=2))
    assert placed(dep)[2] == (2, "c", STOPPING)
    dep = world.step(replace(dep, replicas=3))
    dep = world.step(world.agent(dep, "c", 2, STOPPED))
    dep = world.step(dep)
    third = next(r for r in dep.replica_set if r.index == 2 and not r.superseded)
    assert third.desired is RUN
    assert third.state in (ASSIGNED, RUNNING)


# Deletion


def stopping(dep: Deployment) -> Deployment:
    return replace(dep, status=DeploymentStatus.STOPPING, status_reason="deletion requested")


def test_a_deployment_being_deleted_has_every_replica_told_to_stop(world: World) -> None:
    dep = running_on(world, "a", "b")
    dep, done = reconcile(stopping(dep), world.context(dep))
    assert [(r.state, r.desired) for r in dep.replica_set] == [(STOPPING, STOP)] * 2
    assert not done
    assert (dep.status, dep.status_reason) == (
        DeploymentStatus.STOPPING,
        "stopping: 2 replicas still to stop",
    )
    dep, done = reconcile(world.agent(dep, "a", 0, STOPPED), world.context(dep))
    assert not done
    assert dep.status_reason == "stopping: 1 replicas still to stop"
    dep, done = reconcile(world.agent(dep, "b", 1, STOPPED), world.context(dep))
    assert done
    assert [r.state for r in dep.replica_set] == [STOPPED, STOPPED]


def test_a_deployment_with_no_replicas_is_done_at_once(world: World) -> None:
    dep = stopping(deployment(world.clock, 0))
    _, done = reconcile(dep, world.context(dep))
    assert done


def unplaced(world: World) -> Deployment:
    return world.step(deployment(world.clock))  # no nodes


def on_a_deleted_node(world: World) -> Deployment:
    dep = running_on(world, "a")
    world.remove("a")
    return dep


def failed(world: World) -> Deployment:
    return world.agent(running_on(world, "a"), "a", 0, FAILED, "boom")


def exited(world: World) -> Deployment:
    return world.agent(running_on(world, "a"), "a", 0, EXITED)


def lost(world: World) -> Deployment:
    dep = running_on(world, "a")
    world.set("a", OFFLINE)
    dep = world.step(dep)  # superseded, its replacement unplaced: no other node
    assert superseded(dep) == [(0, "a", LOST, RUN)]
    return dep


STOP_AT_ONCE: dict[str, Callable[[World], Deployment]] = {
    "an unplaced replica": unplaced,
    "a replica whose node was deleted": on_a_deleted_node,
    "a replica that failed": failed,
    "a replica that exited": exited,
    "a replica lost with its node, and its unplaced replacement": lost,
}


@pytest.mark.parametrize("name", STOP_AT_ONCE)
def test_replicas_that_run_nowhere_count_as_stopped_at_once(world: World, name: str) -> None:
    dep = stopping(STOP_AT_ONCE[name](world))
    dep, done = reconcile(dep, world.context(dep))
    assert {r.state for r in dep.replica_set} == {STOPPED}
    assert {r.desired for r in dep.replica_set} == {STOP}
    assert done
    assert dep.status_reason == "stopping: 0 replicas still to stop"


def test_replicas_on_unreachable_nodes_count_as_stopped_after_the_stop_timeout(
    world: World,
) -> None:
    dep = running_on(world, "a", "b")
    world.clock.advance(3600)  # running for an hour
    dep, done = reconcile(stopping(dep), world.context(dep))
    assert [r.state for r in dep.replica_set] == [STOPPING, STOPPING]
    world.set("b", OFFLINE)  # its agent will never confirm
    dep = world.agent(dep, "a", 0, STOPPED)
    world.clock.advance(world.stop_timeout_s - 1)
    dep, done = reconcile(dep, world.context(dep))
    assert ([r.state for r in dep.replica_set], done) == ([STOPPED, STOPPING], False)
    world.clock.advance(1)
    dep, done = reconcile(dep, world.context(dep))
    assert ([r.state for r in dep.replica_set], done) == ([STOPPED, STOPPED], True)


def test_a_stopping_replica_on_a_ready_node_waits_for_its_agent_however_long(
    world: World,
) -> None:
    dep = running_on(world, "a")
    dep, _ = reconcile(stopping(dep), world.context(dep))
    world.clock.advance(10 * world.stop_timeout_s)
    again, done = reconcile(dep, world.context(dep))
    assert again is dep
    assert not done


def test_a_big_deployment_is_placed_a_bounded_number_of_replicas_per_step(
    world: World, clock: FakeClock
) -> None:
    for i in range(500):
        world.add(f"n{i:03}")
    dep = deployment(clock, replicas=450)

    def on_nodes(dep: Deployment) -> set[str]:
        return {node for _, node, _ in placed(dep) if node}

    steps: list[int] = []
    while len(on_nodes(dep)) < 450 and len(steps) < 10:
        ctx = replace(world.context(dep), max_placements=200)
        dep, _ = reconcile(dep, ctx)
        steps.append(len(on_nodes(dep)))

    # Each step tries at most 200 (a step stays short; the scheduler yields between steps).
    assert steps == [200, 400, 450]
