"""Every placement of a replica has its own id (issue 14): the scheduler gives one to each
placement it makes, reports are matched by it, and the agent runs one workload per placement, so
a superseded placement and its replacement on one node are told apart. Agents and controllers
that predate placement ids (an empty id) keep working as before."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from automator67.v1 import deployment_pb2
from automator67.v1 import heartbeat_pb2 as hb

from controller.agent.drivers.base import RUNNING as RUNNING_PB
from controller.agent.drivers.base import STOPPED as STOPPED_PB
from controller.agent.workloads import Workloads
from controller.clock import FakeClock
from controller.models import Deployment, DesiredState, Replica, ReplicaState
from controller.registry.replicas import Report, apply_report
from controller.store.codec import decode_deployment, encode_deployment

from .test_agent_workloads import FakeDriver
from .test_reconcile import World, deployment

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUN_PB = deployment_pb2.REPLICA_DESIRED_STATE_RUN
STOP_PB = deployment_pb2.REPLICA_DESIRED_STATE_STOP
RUNNING, STOPPING, STARTING = ReplicaState.RUNNING, ReplicaState.STOPPING, ReplicaState.STARTING


def test_each_placement_gets_its_own_id_and_a_replacement_a_new_one(clock: FakeClock) -> None:
    world = World(clock)
    world.add("a", cpu=4)
    world.add("b", cpu=4)
    dep = world.step(deployment(clock, replicas=3))
    ids = [r.placement_id for r in dep.replica_set]
    assert all(ids) and len(set(ids)) == 3

    dep = world.run_all(dep)
    lost_node = dep.replica_set[0].node_id
    world.set(lost_node, world.nodes[lost_node].status.OFFLINE)
    dep = world.step(dep)
    old = {r.index: r.placement_id for r in dep.replica_set if r.superseded}
    new = {r.index: r.placement_id for r in dep.replica_set if not r.superseded}
    assert old and all(new[i] and new[i] != old[i] for i in old)


def two_on_one_node() -> Deployment:
    """Replica 0 placed twice on node a: a superseded placement p-old on its way out, and its
    replacement p-new starting."""
    return Deployment(
        id="d1",
        name="web",
        create_time=T0,
        update_time=T0,
        replicas=1,
        replica_set=(
            Replica(0, "a", STOPPING, DesiredState.STOP, superseded=True, placement_id="p-old"),
            Replica(0, "a", STARTING, DesiredState.RUN, placement_id="p-new"),
        ),
    )


def states(dep: Deployment) -> dict[str, ReplicaState]:
    return {r.placement_id: r.state for r in dep.replica_set}


def test_a_report_of_the_superseded_placement_never_changes_its_replacement() -> None:
    dep = two_on_one_node()
    later = T0 + timedelta(seconds=1)

    after = apply_report(dep, "a", Report("d1", 0, ReplicaState.STOPPED, "", "p-old"), later)
    assert after is not None
    assert states(after) == {"p-old": ReplicaState.STOPPED, "p-new": STARTING}

    after = apply_report(after, "a", Report("d1", 0, RUNNING, "", "p-new"), later)
    assert after is not None
    assert states(after) == {"p-old": ReplicaState.STOPPED, "p-new": RUNNING}


def test_a_report_of_an_unknown_placement_id_is_ignored() -> None:
    dep = two_on_one_node()
    report = Report("d1", 0, ReplicaState.FAILED, "boom", "p-gone")
    assert apply_report(dep, "a", report, T0) is None


def test_a_report_without_a_placement_id_matches_by_index_as_before() -> None:
    dep = replace(two_on_one_node(), replica_set=(Replica(0, "a", STARTING, placement_id="p1"),))
    after = apply_report(dep, "a", Report("d1", 0, RUNNING), T0)
    assert after is not None and states(after) == {"p1": RUNNING}


def test_the_placement_id_survives_the_store() -> None:
    dep = two_on_one_node()
    again = decode_deployment("d1", 1, encode_deployment(dep))
    assert [r.placement_id for r in again.replica_set] == ["p-old", "p-new"]


def assignment(placement_id: str, desired: Any = RUN_PB, etag: str = "1") -> hb.Assignment:
    spec = deployment_pb2.Deployment(id="d1", name="d1", etag=etag)
    return hb.Assignment(
        deployment=spec, replica_index=0, desired_state=desired, placement_id=placement_id
    )


async def test_the_agent_runs_a_superseded_placement_and_its_replacement_as_two_workloads() -> None:
    driver = FakeDriver()
    workloads = Workloads(driver)
    workloads.assign(hb.Assignments(assignments=[assignment("p-old")]))
    driver.started[0].move(RUNNING_PB)

    # The replacement starts beside the old one; the old one keeps running.
    workloads.assign(
        hb.Assignments(assignments=[assignment("p-old"), assignment("p-new", etag="2")])
    )
    assert len(driver.started) == 2 and driver.started[0].stops == 0
    reports = {r.placement_id: r.state for r in workloads.reports()}
    assert reports == {"p-old": RUNNING_PB, "p-new": deployment_pb2.REPLICA_STATE_STARTING}

    # Then the old one is told to stop: only it stops.
    driver.started[1].move(RUNNING_PB)
    workloads.assign(
        hb.Assignments(assignments=[assignment("p-old", STOP_PB), assignment("p-new", etag="2")])
    )
    assert driver.started[0].stops == 1 and driver.started[1].stops == 0
    reports = {r.placement_id: r.state for r in workloads.reports()}
    assert reports == {"p-old": STOPPED_PB, "p-new": RUNNING_PB}


async def test_the_agent_stops_a_placement_it_is_no_longer_assigned() -> None:
    driver = FakeDriver()
    workloads = Workloads(driver)
    workloads.assign(hb.Assignments(assignments=[assignment("p-old")]))
    workloads.assign(hb.Assignments(assignments=[assignment("p-new")]))
    assert driver.started[0].stops == 1 and driver.started[1].stops == 0
    assert [r.placement_id for r in workloads.reports()] == ["p-new"]


def test_a_placement_stored_before_generations_runs_the_current_template() -> None:
    dep = replace(two_on_one_node(), template_generation=4, generation=6)
    document = json.loads(encode_deployment(dep))
    for replica in document["replica_set"]:
        del replica["generation"]  # as written before placements recorded it
    document["replica_set"].append(dict(document["replica_set"][0], node_id="", index=1))
    again = decode_deployment("d1", 1, json.dumps(document))
    assert [r.generation for r in again.replica_set] == [4, 4, 0]  # unplaced: none yet
