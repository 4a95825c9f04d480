"""The rules of replicas as table tests: what an agent's report does to a replica, and what the
replicas make of the deployment's status and history. Pure functions on a fixed fake clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from controller.clock import FakeClock
from controller.models import (
    Deployment,
    DeploymentStatus,
    DesiredState,
    Replica,
    ReplicaState,
    StatusChange,
)
from controller.registry.replicas import (
    MAX_FAILURES,
    MAX_HISTORY,
    Report,
    apply_report,
    current,
    nodes_of,
    summarize,
    with_status,
)

CLOCK = FakeClock()
T0 = CLOCK.now()
LATER = T0 + timedelta(seconds=30)

PENDING, ASSIGNED, STARTING, RUNNING = (
    ReplicaState.PENDING,
    ReplicaState.ASSIGNED,
    ReplicaState.STARTING,
    ReplicaState.RUNNING,
)
STOPPING, STOPPED, EXITED, FAILED, LOST = (
    ReplicaState.STOPPING,
    ReplicaState.STOPPED,
    ReplicaState.EXITED,
    ReplicaState.FAILED,
    ReplicaState.LOST,
)
RUN, STOP = DesiredState.RUN, DesiredState.STOP


def deployment(
    *replicas: Replica, status: DeploymentStatus = DeploymentStatus.PENDING
) -> Deployment:
    """Deployment d1 wanting as many replicas as it is given."""
    return Deployment(
        id="d1",
        name="web",
        create_time=T0,
        update_time=T0,
        image="busybox",
        replicas=len(replicas),
        replica_set=replicas,
        status=status,
    )


def on(node_id: str, state: ReplicaState, **changes: Any) -> Replica:
    """Replica 0 placed on `node_id`, in `state` since T0."""
    return replace(Replica(0, node_id, state, state_time=T0), **changes)


# name: (the replica before, the report's (state, message), the replica after; None: ignored)
REPORTS: dict[str, tuple[Replica, tuple[ReplicaState, str], Replica | None]] = {
    "an assigned replica starts": (
        on("a", ASSIGNED),
        (STARTING, ""),
        on("a", STARTING, state_time=LATER),
    ),
    "a starting replica runs": (
        on("a", STARTING),
        (RUNNING, ""),
        on("a", RUNNING, state_time=LATER, ready_time=LATER),
    ),
    "an assigned replica may be reported running at once": (
        on("a", ASSIGNED),
        (RUNNING, ""),
        on("a", RUNNING, state_time=LATER, ready_time=LATER),
    ),
    "a failure is counted": (
        on("a", RUNNING, failures=2),
        (FAILED, "oom"),
        on("a", FAILED, message="oom", failures=3, state_time=LATER),
    ),
    "an exit is counted as a failure": (
        on("a", RUNNING),
        (EXITED, "exit 0"),
        on("a", EXITED, message="exit 0", failures=1, state_time=LATER),
    ),
    "the same failure reported again is ignored": (
        on("a", FAILED, message="oom"),
        (FAILED, "oom"),
        None,
    ),
    "a new message for the same failure is not counted again": (
        on("a", FAILED, message="oom", failures=1),
        (FAILED, "oom, again"),
        on("a", FAILED, message="oom, again", failures=1),
    ),
    "a failure that becomes an exit is not counted again": (
        on("a", FAILED, message="oom", failures=1),
        (EXITED, "exit 1"),
        on("a", EXITED, message="exit 1", failures=1, state_time=LATER),
    ),
    "the same state without news is ignored": (
        on("a", RUNNING, ready_time=T0),
        (RUNNING, ""),
        None,
    ),
    "a new message alone keeps the time the state was entered": (
        on("a", RUNNING, ready_time=T0),
        (RUNNING, "healthy"),
        on("a", RUNNING, message="healthy", ready_time=T0),
    ),
    "a replica told to stop that still runs is stopping": (
        on("a", RUNNING, desired=STOP),
        (RUNNING, ""),
        on("a", STOPPING, desired=STOP, state_time=LATER),
    ),
    "a replica told to stop that is still starting is stopping": (
        on("a", ASSIGNED, desired=STOP),
        (STARTING, ""),
        on("a", STOPPING, desired=STOP, state_time=LATER),
    ),
    "a stopping replica reported running again is ignored": (
        on("a", STOPPING, desired=STOP),
        (RUNNING, ""),
        None,
    ),
    "a replica told to stop stops": (
        on("a", STOPPING, desired=STOP),
        (STOPPED, ""),
        on("a", STOPPED, desired=STOP, state_time=LATER),
    ),
    "a replica told to stop that fails is not counted as a failure": (
        on("a", STOPPING, desired=STOP),
        (FAILED, "killed"),
        on("a", FAILED, desired=STOP, message="killed", state_time=LATER),
    ),
    "a lost replica whose node came back runs": (
        on("a", LOST, superseded=True),
        (RUNNING, ""),
        on("a", RUNNING, superseded=True, state_time=LATER, ready_time=LATER),
    ),
    "a long message is cut to 1024 characters": (
        on("a", RUNNING),
        (FAILED, "x" * 5000),
        on("a", FAILED, message="x" * 1024, failures=1, state_time=LATER),
    ),
}


@pytest.mark.parametrize("name", REPORTS)
def test_a_report_moves_the_replica(name: str) -> None:
    before, (state, message), after = REPORTS[name]
    changed = apply_report(deployment(before), "a", Report("d1", 0, state, message), LATER)
    if after is None:
        assert changed is None
    else:
        assert changed is not None
        assert changed.replica_set == (after,)


IGNORED: dict[str, tuple[str, int]] = {
    # name: (the reporting node, the reported index)
    "a report from another node": ("b", 0),
    "a report for an index the deployment lacks": ("a", 7),
    "a report for an index placed on another node": ("a", 1),
}


@pytest.mark.parametrize("name", IGNORED)
def test_reports_of_placements_the_controller_does_not_know_are_ignored(name: str) -> None:
    node_id, index = IGNORED[name]
    dep = deployment(on("a", RUNNING), replace(on("b", RUNNING), index=1))
    assert apply_report(dep, node_id, Report("d1", index, FAILED, "boom"), LATER) is None


def test_a_report_changes_only_its_own_replica() -> None:
    others = replace(on("b", RUNNING), index=1)
    dep = deployment(on("a", ASSIGNED), others)
    changed = apply_report(dep, "a", Report("d1", 0, RUNNING), LATER)
    assert changed is not None
    assert changed.replica_set == (on("a", RUNNING, state_time=LATER, ready_time=LATER), others)
    assert (changed.status, changed.history) == (dep.status, dep.history)


def test_failures_are_counted_once_per_failure_over_a_run_of_reports() -> None:
    dep = deployment(on("a", ASSIGNED))
    script = [
        (RUNNING, ""),
        (FAILED, "oom"),
        (FAILED, "oom"),
        (FAILED, "oom: still"),
        (STARTING, ""),
        (RUNNING, ""),
        (EXITED, "exit 2"),
        (EXITED, "exit 2"),
    ]
    for state, message in script:
        dep = apply_report(dep, "a", Report("d1", 0, state, message), LATER) or dep
    assert dep.replica_set[0].failures == 2


def r(index: int, state: ReplicaState, **changes: Any) -> Replica:
    """Replica `index` placed on node n<index>, in `state` since T0."""
    return replace(Replica(index, f"n{index}", state, state_time=T0), **changes)


# name: (replicas wanted, the replica set, status, reason)
SUMMARIES: dict[str, tuple[int, tuple[Replica, ...], DeploymentStatus, str]] = {
    "all replicas running": (
        3,
        (r(0, RUNNING), r(1, RUNNING), r(2, RUNNING)),
        DeploymentStatus.RUNNING,
        "3/3 replicas running",
    ),
    "some replicas running": (
        3,
        (r(0, RUNNING), r(1, ASSIGNED), r(2, STARTING)),
        DeploymentStatus.SCHEDULED,
        "1/3 replicas running",
    ),
    "all placed, none running yet": (
        2,
        (r(0, ASSIGNED), r(1, ASSIGNED)),
        DeploymentStatus.SCHEDULED,
        "0/2 replicas running",
    ),
    "a replica not placed, with its reason": (
        2,
        (r(0, RUNNING), Replica(1, message="no nodes are registered")),
        DeploymentStatus.PENDING,
        "1 of 2 replicas not placed: no nodes are registered",
    ),
    "no replicas made yet": (
        3,
        (),
        DeploymentStatus.PENDING,
        "0 of 3 replicas not placed: waiting to be scheduled",
    ),
    "a replica that failed too often": (
        2,
        (r(0, RUNNING), r(1, FAILED, failures=MAX_FAILURES, message="oom")),
        DeploymentStatus.FAILED,
        f"replica 1 failed {MAX_FAILURES} times in a row: oom",
    ),
    "a replica that failed fewer times": (
        2,
        (r(0, RUNNING), r(1, RUNNING, failures=MAX_FAILURES - 1)),
        DeploymentStatus.RUNNING,
        "2/2 replicas running",
    ),
    "superseded placements do not count": (
        1,
        (r(0, LOST, superseded=True), r(0, RUNNING, node_id="n9")),
        DeploymentStatus.RUNNING,
        "1/1 replicas running",
    ),
    "replicas being scaled down do not count": (
        1,
        (r(0, RUNNING), r(1, STOPPING, desired=STOP), r(2, FAILED, failures=9)),
        DeploymentStatus.RUNNING,
        "1/1 replicas running",
    ),
    "no replicas wanted": (0, (), DeploymentStatus.RUNNING, "0/0 replicas running"),
}


@pytest.mark.parametrize("name", SUMMARIES)
def test_the_status_summarizes_the_replicas(name: str) -> None:
    count, replicas, status, reason = SUMMARIES[name]
    dep = replace(deployment(*replicas), replicas=count)
    assert summarize(dep) == (status, reason)


def test_a_deployment_being_deleted_counts_the_replicas_still_to_stop() -> None:
    dep = deployment(r(0, STOPPED), r(1, STOPPING), r(2, RUNNING), status=DeploymentStatus.STOPPING)
    assert summarize(dep) == (DeploymentStatus.STOPPING, "stopping: 2 replicas still to stop")


def test_a_change_of_status_is_recorded_in_the_history_with_the_time() -> None:
    dep = deployment(r(0, ASSIGNED))
    assert dep.status is DeploymentStatus.PENDING
    scheduled = with_status(dep, LATER)
    assert (scheduled.status, scheduled.status_reason) == (
        DeploymentStatus.SCHEDULED,
        "0/1 replicas running",
    )
    assert scheduled.history == (
        StatusChange(DeploymentStatus.SCHEDULED, "0/1 replicas running", LATER),
    )
    assert scheduled.update_time == LATER


def test_a_new_reason_for_the_same_status_is_no_new_history_entry() -> None:
    dep = with_status(deployment(r(0, RUNNING), r(1, ASSIGNED)), T0)
    more = with_status(
        replace(dep, replica_set=(r(0, RUNNING), r(1, RUNNING), r(2, ASSIGNED)), replicas=3), LATER
    )
    assert (more.status, more.status_reason) == (DeploymentStatus.SCHEDULED, "2/3 replicas running")
    assert more.history == dep.history
    assert more.update_time == LATER


def test_an_unchanged_status_leaves_the_deployment_as_it_was() -> None:
    dep = with_status(deployment(r(0, RUNNING)), T0)
    assert with_status(dep, LATER) is dep


def test_the_history_keeps_the_last_twenty_changes() -> None:
    dep = deployment(r(0, ASSIGNED))
    times = [T0 + timedelta(seconds=s) for s in range(25)]
    for i, at in enumerate(times):
        state = RUNNING if i % 2 else ASSIGNED
        dep = with_status(replace(dep, replica_set=(r(0, state),)), at)
    assert len(dep.history) == MAX_HISTORY == 20
    assert [h.time for h in dep.history] == times[-20:]
    assert dep.history[-1].status is DeploymentStatus.SCHEDULED  # i = 24: assigned


def test_current_placements_are_the_unsuperseded_ones_by_index() -> None:
    dep = deployment(
        r(2, RUNNING), r(0, LOST, superseded=True), r(0, ASSIGNED, node_id="x"), r(1, RUNNING)
    )
    assert [(p.index, p.node_id) for p in current(dep)] == [(0, "x"), (1, "n1"), (2, "n2")]
    assert nodes_of(dep.replica_set) == {"n0", "n1", "n2", "x"}
    assert nodes_of([Replica(0)]) == set()
