"""Deployment.status_reason_code: the scheduler marks a replica that no node fits
(`Replica.unschedulable`, set where it writes the NoFit text) and the status says UNSCHEDULABLE
while it waits; placed, the mark and the code go. A replica backing off after a failure waits
too, but is not unschedulable. Both survive the store's codec."""

from __future__ import annotations

from dataclasses import replace

from controller.clock import FakeClock
from controller.models import DeploymentStatus, ReplicaState
from controller.registry.replicas import DELETION_REQUESTED, REPLICA_FAILING, reason_code
from controller.store.codec import decode_deployment, encode_deployment

from .test_reconcile import World, deployment


def test_a_replica_no_node_fits_makes_the_deployment_unschedulable_until_placed(
    clock: FakeClock,
) -> None:
    world = World(clock)
    world.add("small", cpu=0.5)  # the replica asks for 1 cpu
    dep = world.step(deployment(clock, replicas=2))

    assert dep.status is DeploymentStatus.PENDING
    assert dep.status_reason_code == "UNSCHEDULABLE"
    assert all(r.unschedulable and not r.node_id for r in dep.replica_set)
    assert "no READY node" in dep.status_reason  # the text for people is unchanged

    world.add("big", cpu=1)  # room for one of the two
    dep = world.step(dep)
    placed = [r for r in dep.replica_set if r.node_id]
    assert len(placed) == 1 and not placed[0].unschedulable
    assert dep.status_reason_code == "UNSCHEDULABLE"  # the other still waits

    world.add("big2", cpu=1)
    dep = world.step(dep)
    assert dep.status_reason_code == ""
    assert not any(r.unschedulable for r in dep.replica_set)


def test_a_replica_backing_off_is_pending_but_not_unschedulable(clock: FakeClock) -> None:
    world = World(clock)
    world.add("n1", cpu=4)
    dep = world.step(deployment(clock))
    dep = world.agent(dep, "n1", 0, ReplicaState.FAILED, "exit 1")
    dep = world.step(dep)  # placed again after a backoff

    (waiting,) = [r for r in dep.replica_set if not r.superseded]
    assert waiting.retry_at is not None and not waiting.node_id
    assert dep.status is DeploymentStatus.PENDING and dep.status_reason_code == ""


def test_failed_and_stopping_have_their_codes(clock: FakeClock) -> None:
    dep = deployment(clock)
    assert reason_code(dep, DeploymentStatus.FAILED) == REPLICA_FAILING
    assert reason_code(dep, DeploymentStatus.STOPPING) == DELETION_REQUESTED
    assert reason_code(dep, DeploymentStatus.RUNNING) == ""


def test_the_code_and_the_mark_survive_the_codec(clock: FakeClock) -> None:
    world = World(clock)
    dep = world.step(deployment(clock))  # no node at all
    assert dep.status_reason_code == "UNSCHEDULABLE"

    decoded = decode_deployment(dep.id, 7, encode_deployment(dep))

    assert decoded.status_reason_code == "UNSCHEDULABLE"
    assert [r.unschedulable for r in decoded.replica_set] == [True]
    assert replace(decoded, revision=dep.revision) == dep
