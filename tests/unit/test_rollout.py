"""Rolling updates (scheduler/rollout.py through reconcile), on a fake clock: the budget's
rounding, a whole update under each surge/unavailable combination with its limits checked at
every step, a failing new version rolled back, a missed progress deadline, pause and resume, and
a node lost mid-rollout. Agents are played by `Fleet`, which answers every placement by its id,
so a superseded placement and its replacement on one node are told apart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from controller.clock import FakeClock
from controller.models import (
    Deployment,
    DesiredState,
    Health,
    HealthCheck,
    IntOrPercent,
    NodeStatus,
    Replica,
    ReplicaState,
    RolloutOutcome,
    UpdateStrategy,
)
from controller.registry import rollouts
from controller.registry.replicas import Report, apply_report
from controller.scheduler.rollout import (
    GONE,
    ROLLBACK_AFTER_FAILURES,
    account,
    advance,
    available,
    budget,
    settled,
)

from .test_reconcile import World, deployment

RUNNING, STOPPED, FAILED = ReplicaState.RUNNING, ReplicaState.STOPPED, ReplicaState.FAILED
CHECK = HealthCheck(command=("true",), interval_s=1, timeout_s=1, failure_threshold=1)


def pct(value: int) -> IntOrPercent:
    return IntOrPercent(value, percent=True)


def n(value: int) -> IntOrPercent:
    return IntOrPercent(value)


# name: (replicas, max_surge, max_unavailable, expected (surge, unavailable))
BUDGETS: dict[str, tuple[int, IntOrPercent, IntOrPercent, tuple[int, int]]] = {
    "defaults on 4: one of each": (4, pct(25), pct(25), (1, 1)),
    "defaults on 10: surge rounds up, unavailable down": (10, pct(25), pct(25), (3, 2)),
    "defaults on 1: a surge of one, nothing unavailable": (1, pct(25), pct(25), (1, 0)),
    "counts are taken as they are": (4, n(2), n(1), (2, 1)),
    "half of 5": (5, pct(50), pct(50), (3, 2)),
    "all at once": (4, pct(0), pct(100), (0, 4)),
    "both round to 0 on 0 replicas: one may be unavailable": (0, pct(25), pct(25), (0, 1)),
}


@pytest.mark.parametrize("name", BUDGETS)
def test_the_budget_rounds_like_kubernetes(clock: FakeClock, name: str) -> None:
    replicas, surge, unavailable, expected = BUDGETS[name]
    dep = replace(
        deployment(clock, replicas),
        update_strategy=UpdateStrategy(max_unavailable=unavailable, max_surge=surge),
    )
    b = budget(dep)
    assert (b.max_surge, b.max_unavailable) == expected


@dataclass
class Fleet:
    """The world, and agents that answer each placement by id: a new placement on a READY
    node runs (healthy unless its template is `broken`), a stop stops."""

    world: World
    broken: set[int]  # template generations whose health check fails
    crashing: set[int]  # template generations that exit at once
    silent: bool = False  # agents say nothing (a version that never starts)

    def agents(self, dep: Deployment) -> Deployment:
        now = self.world.clock.now()
        for r in dep.replica_set:
            if not r.node_id or self.world.status(r.node_id) is not NodeStatus.READY:
                continue
            state, health = self._answer(r)
            if state is None:
                continue
            report = Report(dep.id, r.index, state, "", r.placement_id, r.generation, health)
            dep = apply_report(dep, r.node_id, report, now) or dep
        return dep

    def _answer(self, r: Replica) -> tuple[ReplicaState | None, Health]:
        if r.desired is DesiredState.STOP:
            return STOPPED, Health.UNSPECIFIED
        if self.silent or r.state in GONE - {ReplicaState.PENDING}:
            return None, Health.UNSPECIFIED
        if r.generation in self.crashing:
            return FAILED, Health.UNSPECIFIED
        healthy = r.generation not in self.broken
        return RUNNING, Health.HEALTHY if healthy else Health.UNHEALTHY

    def step(self, dep: Deployment) -> Deployment:
        return self.world.step(dep)


def fleet(clock: FakeClock, nodes: int = 4, cpu: float = 8) -> Fleet:
    world = World(clock)
    for i in range(nodes):
        world.add(f"n{i}", cpu=cpu)
    return Fleet(world, set(), set())


def running(f: Fleet, replicas: int, strategy: UpdateStrategy) -> Deployment:
    """A deployment whose first rollout completed: every replica runs generation 1."""
    clock = f.world.clock
    dep = replace(deployment(clock, replicas), update_strategy=strategy, health_check=CHECK)
    dep = rollouts.first(dep, clock.now())
    dep = settle(f, dep)
    assert dep.rollouts[-1].outcome is RolloutOutcome.COMPLETE
    return dep


def settle(
    f: Fleet, dep: Deployment, check: Callable[[Deployment], None] = lambda d: None, steps: int = 60
) -> Deployment:
    """Steps and lets the agents answer until nothing changes (or `steps` run out)."""
    for _ in range(steps):
        stepped = f.step(dep)
        check(stepped)
        answered = f.agents(stepped)
        f.world.clock.advance(1)
        if answered == dep:
            return answered
        dep = answered
    return dep


def update(dep: Deployment, clock: FakeClock, image: str) -> Deployment:
    """What DeploymentRegistry.update does to a change of the image."""
    changed = replace(dep, image=image, generation=dep.generation + 1)
    return rollouts.begin(changed, changed.template, clock.now())


def limits(f: Fleet, surge: int, unavailable: int) -> Callable[[Deployment], None]:
    def check(dep: Deployment) -> None:
        now = f.world.clock.now()
        # Every placement asked to run counts against the surge, placed or still pending.
        wanted = [r for r in dep.replica_set if r.desired is DesiredState.RUN]
        up = [r for r in wanted if r.node_id and available(dep, r, now, lambda _: True)]
        assert len(wanted) <= dep.replicas + surge, dep.replica_set
        assert len(up) >= dep.replicas - unavailable, dep.replica_set

    return check


# name: (replicas, max_surge, max_unavailable)
UPDATES: dict[str, tuple[int, IntOrPercent, IntOrPercent]] = {
    "defaults on 4": (4, pct(25), pct(25)),
    "surge only: one extra at a time": (4, n(1), n(0)),
    "no surge: one down at a time": (4, n(0), n(1)),
    "a surge of all, none down": (4, pct(100), n(0)),
    "two up, 40% down on 5": (5, n(2), pct(40)),
    "all down at once": (3, pct(0), pct(100)),
    "defaults on 10": (10, pct(25), pct(25)),
}


@pytest.mark.parametrize("name", UPDATES)
def test_an_update_moves_every_replica_within_its_limits(clock: FakeClock, name: str) -> None:
    replicas, surge, unavailable = UPDATES[name]
    f = fleet(clock)
    strategy = UpdateStrategy(max_unavailable=unavailable, max_surge=surge)
    dep = running(f, replicas, strategy)
    b = budget(dep)

    dep = settle(f, update(dep, clock, "v2"), limits(f, b.max_surge, b.max_unavailable))

    assert dep.template_generation == 2
    assert [r.generation for r in dep.replica_set] == [2] * replicas
    assert not any(r.superseded for r in dep.replica_set)
    assert (dep.updated_replicas, dep.available_replicas) == (replicas, replicas)
    assert [r.outcome for r in dep.rollouts] == [RolloutOutcome.COMPLETE] * 2
    assert dep.observed_generation == dep.generation == 2


def test_a_surge_replacement_starts_beside_the_replica_it_replaces(clock: FakeClock) -> None:
    f = fleet(clock)
    dep = running(f, 4, UpdateStrategy(max_unavailable=n(0), max_surge=n(1)))
    before = {r.index: r.node_id for r in dep.replica_set}

    moved = f.step(update(dep, clock, "v2"))

    new = [r for r in moved.replica_set if r.generation == 2]
    old = [r for r in moved.replica_set if r.superseded]
    assert len(new) == 1 and len(old) == 1
    assert new[0].node_id == before[new[0].index] == old[0].node_id
    assert old[0].desired is DesiredState.RUN and old[0].handover
    assert new[0].placement_id != old[0].placement_id


def test_a_new_version_that_fails_its_health_check_is_rolled_back(clock: FakeClock) -> None:
    f = fleet(clock)
    dep = running(f, 4, UpdateStrategy())
    f.broken.add(2)

    dep = settle(f, update(dep, clock, "broken"), limits(f, 1, 1))

    assert (dep.image, dep.template_generation, dep.generation) == ("busybox", 1, 3)
    outcomes = [(r.template_generation, r.outcome, r.reason) for r in dep.rollouts]
    assert outcomes == [
        (1, RolloutOutcome.COMPLETE, ""),
        (2, RolloutOutcome.ROLLED_BACK, "ROLLOUT_HEALTH_CHECK_FAILED"),
        (1, RolloutOutcome.COMPLETE, "ROLLBACK"),
    ]
    assert "failed its health check" in dep.rollouts[1].message
    assert "rolled back to generation 1 because generation 2 failed" in dep.status_reason
    assert [r.generation for r in dep.replica_set] == [1] * 4
    assert dep.available_replicas == 4


def test_a_new_version_that_keeps_crashing_is_rolled_back(clock: FakeClock) -> None:
    f = fleet(clock)
    dep = running(f, 2, UpdateStrategy(max_unavailable=n(0), max_surge=n(1)))
    f.crashing.add(2)

    dep = update(dep, clock, "crashes")
    for _ in range(30):  # settle, then let the backoff of the crashed replica expire
        dep = settle(f, dep, limits(f, 1, 0))
        if len(dep.rollouts) == 3 and dep.rollouts[-1].outcome is RolloutOutcome.COMPLETE:
            break
        clock.advance(5)

    failed = dep.rollouts[1]
    assert (failed.outcome, failed.reason) == (
        RolloutOutcome.ROLLED_BACK,
        "ROLLOUT_REPLICAS_FAILING",
    )
    assert f"failed to run {ROLLBACK_AFTER_FAILURES} times" in failed.message
    assert dep.template_generation == 1 and dep.rollouts[-1].outcome is RolloutOutcome.COMPLETE
    assert [r.generation for r in dep.replica_set] == [1, 1]


def test_a_rollout_without_progress_past_its_deadline_is_rolled_back(clock: FakeClock) -> None:
    f = fleet(clock)
    strategy = UpdateStrategy(max_unavailable=n(0), max_surge=n(1), progress_deadline_s=30)
    dep = running(f, 2, strategy)
    f.silent = True  # the new version never reports

    dep = f.step(update(dep, clock, "hangs"))
    clock.advance(31)
    dep = f.step(dep)

    assert dep.rollouts[1].outcome is RolloutOutcome.ROLLED_BACK
    assert dep.rollouts[1].reason == "ROLLOUT_PROGRESS_DEADLINE_EXCEEDED"
    assert "made no progress for 30s" in dep.rollouts[1].message
    assert dep.template_generation == 1
    f.silent = False
    dep = settle(f, dep)
    assert [r.generation for r in dep.replica_set] == [1, 1]
    assert dep.rollouts[-1].outcome is RolloutOutcome.COMPLETE


def test_the_first_rollout_has_nothing_to_roll_back_to(clock: FakeClock) -> None:
    f = fleet(clock)
    f.broken.add(1)
    dep = replace(deployment(clock, 2), health_check=CHECK)
    dep = settle(f, rollouts.first(dep, clock.now()))
    assert dep.rollouts[-1].outcome is RolloutOutcome.FAILED
    assert "nothing to roll back to" in dep.rollouts[-1].message
    assert dep.template_generation == 1


def test_pause_stops_a_rollout_where_it_is_and_resume_goes_on(clock: FakeClock) -> None:
    f = fleet(clock)
    dep = running(f, 4, UpdateStrategy(max_unavailable=n(0), max_surge=n(1)))
    dep = f.agents(f.step(update(dep, clock, "v2")))
    dep = replace(dep, paused=True, generation=dep.generation + 1)

    clock.advance(3600)  # no deadline while paused
    dep = settle(f, dep)

    assert sorted(r.generation for r in dep.replica_set) == [1, 1, 1, 2]
    assert dep.rollouts[-1].outcome is RolloutOutcome.PROGRESSING
    assert "(paused)" in dep.status_reason

    dep = rollouts.resumed(replace(dep, paused=False, generation=dep.generation + 1), clock.now())
    dep = settle(f, dep)
    assert [r.generation for r in dep.replica_set] == [2] * 4
    assert dep.rollouts[-1].outcome is RolloutOutcome.COMPLETE


def test_a_node_lost_mid_rollout_has_its_replicas_replaced_by_the_new_version(
    clock: FakeClock,
) -> None:
    f = fleet(clock, nodes=4, cpu=2)
    dep = running(f, 4, UpdateStrategy(max_unavailable=n(0), max_surge=n(1)))
    dep = f.agents(f.step(update(dep, clock, "v2")))
    moving = next(r for r in dep.replica_set if r.generation == 2)
    lost = next(r.node_id for r in dep.replica_set if r.node_id != moving.node_id)
    f.world.set(lost, NodeStatus.OFFLINE)

    dep = settle(f, dep)

    current = [r for r in dep.replica_set if not r.superseded]
    assert [r.generation for r in current] == [2] * 4
    assert all(r.node_id != lost for r in current)
    assert dep.rollouts[-1].outcome is RolloutOutcome.COMPLETE


def test_a_template_change_mid_rollout_supersedes_it(clock: FakeClock) -> None:
    f = fleet(clock)
    dep = running(f, 4, UpdateStrategy())
    dep = f.agents(f.step(update(dep, clock, "v2")))
    dep = settle(f, update(dep, clock, "v3"), limits(f, 1, 1))
    assert [(r.template_generation, r.outcome) for r in dep.rollouts] == [
        (1, RolloutOutcome.COMPLETE),
        (2, RolloutOutcome.SUPERSEDED),
        (3, RolloutOutcome.COMPLETE),
    ]
    assert [r.generation for r in dep.replica_set] == [3] * 4


def test_the_history_keeps_the_last_revision_history_limit_finished_rollouts(
    clock: FakeClock,
) -> None:
    f = fleet(clock)
    dep = running(f, 1, UpdateStrategy(revision_history_limit=2))
    for version in range(2, 6):
        dep = settle(f, update(dep, clock, f"v{version}"))
    assert [r.template_generation for r in dep.rollouts] == [4, 5]
    assert dep.image == "v5"


def test_a_template_equal_to_an_earlier_one_reuses_its_generation(clock: FakeClock) -> None:
    f = fleet(clock)
    dep = running(f, 2, UpdateStrategy())
    dep = settle(f, update(dep, clock, "v2"))
    dep = settle(f, update(dep, clock, "busybox"))  # back to the first image
    assert (dep.generation, dep.template_generation) == (3, 1)
    assert [r.generation for r in dep.replica_set] == [1, 1]


def test_without_room_for_a_surge_replicas_move_by_stopping_first(clock: FakeClock) -> None:
    f = fleet(clock, nodes=4, cpu=1)  # room for exactly one replica per node
    dep = running(f, 4, UpdateStrategy(max_unavailable=n(1), max_surge=n(1)))

    dep = settle(f, update(dep, clock, "v2"), limits(f, 1, 1))

    assert [r.generation for r in dep.replica_set] == [2] * 4
    assert dep.rollouts[-1].outcome is RolloutOutcome.COMPLETE


def test_without_room_and_nothing_allowed_down_a_rollout_waits_for_its_deadline(
    clock: FakeClock,
) -> None:
    f = fleet(clock, nodes=2, cpu=1)
    strategy = UpdateStrategy(max_unavailable=n(0), max_surge=n(1), progress_deadline_s=60)
    dep = running(f, 2, strategy)
    dep = settle(f, update(dep, clock, "v2"), limits(f, 1, 0), steps=10)
    pending = [r for r in dep.replica_set if r.generation == 2]
    assert pending and all(not r.node_id for r in pending)  # waiting for room
    assert "no READY node" in pending[0].message
    clock.advance(60)
    dep = settle(f, dep, limits(f, 1, 0))
    assert dep.rollouts[1].reason == "ROLLOUT_PROGRESS_DEADLINE_EXCEEDED"
    assert [r.generation for r in dep.replica_set] == [1, 1]


# name: (replicas, max_surge, max_unavailable)
ROOM_AT_ONCE: dict[str, tuple[int, IntOrPercent, IntOrPercent]] = {
    "surge 1, none down": (4, n(1), n(0)),
    "surge 2, none down": (4, n(2), n(0)),
    "defaults on 4": (4, pct(25), pct(25)),
    "surge 1, two down": (4, n(1), n(2)),
}


@pytest.mark.parametrize("name", ROOM_AT_ONCE)
def test_room_for_every_replacement_at_once_never_runs_more_than_the_surge(
    clock: FakeClock, name: str
) -> None:
    """Replacements waiting for room count against max_surge: when room for all of them
    appears in one step, at most replicas + max_surge placements run (counting only placed
    ones, every replica surged while waiting and all started at once)."""
    replicas, surge, unavailable = ROOM_AT_ONCE[name]
    f = fleet(clock, nodes=replicas, cpu=1)  # full: room for exactly one replica per node
    strategy = UpdateStrategy(max_unavailable=unavailable, max_surge=surge)
    dep = running(f, replicas, strategy)
    b = budget(dep)
    check = limits(f, b.max_surge, b.max_unavailable)
    dep = settle(f, update(dep, clock, "v2"), check, steps=5)

    for i in range(replicas):  # room for every replica at once
        f.world.add(f"extra{i}", cpu=1)
    most = 0

    def placed_at_most(d: Deployment) -> None:
        nonlocal most
        check(d)
        most = max(most, sum(1 for r in d.replica_set if r.desired is DesiredState.RUN))

    dep = settle(f, dep, placed_at_most)

    assert most <= replicas + b.max_surge
    assert [r.generation for r in dep.replica_set] == [2] * replicas
    assert dep.rollouts[-1].outcome is RolloutOutcome.COMPLETE


def _nodes_ready(_: str) -> bool:
    return True


# name: what is changed on a settled deployment (every one makes it unsettled)
UNSETTLED: dict[str, Callable[[Deployment], Deployment]] = {
    "a spec change not yet observed": lambda d: replace(d, generation=d.generation + 1),
    "a replica starting": lambda d: replace(
        d, replica_set=(replace(d.replica_set[0], state=ReplicaState.STARTING), *d.replica_set[1:])
    ),
    "a replica of another template": lambda d: replace(
        d, replica_set=(replace(d.replica_set[0], generation=9), *d.replica_set[1:])
    ),
    "counts out of date": lambda d: replace(d, available_replicas=d.replicas - 1),
    "scaled up": lambda d: replace(d, replicas=d.replicas + 1),
    "its rollout still in progress": lambda d: replace(
        d, rollouts=(*d.rollouts[:-1], replace(d.rollouts[-1], outcome=RolloutOutcome.PROGRESSING))
    ),
    "ready for less than min_ready_seconds": lambda d: replace(
        d, update_strategy=replace(d.update_strategy, min_ready_s=10**6)
    ),
}


@pytest.mark.parametrize("name", [*UNSETTLED, "node offline"])
def test_settled_is_false_when_a_step_or_count_could_change_something(
    clock: FakeClock, name: str
) -> None:
    f = fleet(clock)
    dep = running(f, 4, UpdateStrategy())
    now = clock.now()
    assert settled(dep, now, _nodes_ready)
    assert advance(dep, now, _nodes_ready) == dep == account(dep, now, _nodes_ready)

    if name == "node offline":
        offline = dep.replica_set[0].node_id
        assert not settled(dep, now, lambda node: node != offline)
        return
    changed = UNSETTLED[name](dep)
    assert not settled(changed, now, _nodes_ready)


def test_a_settled_deployment_is_one_the_rollout_step_leaves_unchanged(clock: FakeClock) -> None:
    """Throughout an update, a failing version's rollback and a scale, whenever `settled`
    says so, `advance` and `account` change nothing (reconcile skips them then)."""
    f = fleet(clock)
    seen = 0

    def check(d: Deployment) -> None:
        nonlocal seen
        now = clock.now()
        if settled(d, now, _nodes_ready):
            seen += 1
            assert advance(d, now, _nodes_ready) == d
            assert account(d, now, _nodes_ready) == d

    dep = running(f, 4, UpdateStrategy(min_ready_s=2))
    dep = settle(f, update(dep, clock, "v2"), check)
    f.broken.add(3)
    dep = settle(f, update(dep, clock, "v3"), check)
    dep = settle(f, replace(dep, replicas=6), check)
    assert dep.rollouts[-1].outcome is RolloutOutcome.COMPLETE
    assert seen > 3
