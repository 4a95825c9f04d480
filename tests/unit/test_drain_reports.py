"""What the leader writes on a draining node (scheduler/drainer.py), through `Scheduler.run_once`
over real registries on a SQLite store and a fake clock: a drain's progress is written when it
changed (state, remaining, moved, stopped, message), never once per pass; a drain that waits
for room writes nothing while it waits, however many passes run."""

from __future__ import annotations

from itertools import pairwise

from controller.clock import FakeClock
from controller.models import DesiredState, Drain, DrainState, ReplicaState
from controller.registry.node_updates import DrainRequest, NodeChanges
from controller.registry.replicas import Report
from controller.store.base import Store

from .test_scheduler_loop import Plane, make_plane, web


async def agents_report(plane: Plane) -> None:
    """Every agent does what it was told and says so: a placement to run RUNNING, one to stop
    STOPPED."""
    for dep in plane.deployments.latest():
        for node_id in {r.node_id for r in dep.replica_set if r.node_id}:
            reports = [
                Report(
                    dep.id,
                    r.index,
                    ReplicaState.RUNNING if r.desired is DesiredState.RUN else ReplicaState.STOPPED,
                    placement_id=r.placement_id,
                )
                for dep_, r in plane.deployments.assignments(node_id)
                if dep_.id == dep.id
            ]
            plane.deployments.report(node_id, reports)


async def passes(plane: Plane, node_id: str, count: int) -> list[tuple[int, Drain | None]]:
    """Runs `count` scheduler passes, a second apart, the agents answering after each; the
    draining node's revision and drain after each."""
    seen = []
    for _ in range(count):
        plane.clock.advance(1)
        await plane.scheduler.run_once()
        await agents_report(plane)
        node = plane.nodes.get(node_id)
        seen.append((node.revision, node.drain))
    return seen


def written_without_change(seen: list[tuple[int, Drain | None]]) -> list[int]:
    """The passes after which the node had a new revision but the same drain."""
    return [
        i
        for i, ((rev, drain), (next_rev, next_drain)) in enumerate(pairwise(seen), 1)
        if next_rev != rev and next_drain == drain
    ]


async def test_a_drain_waiting_for_room_writes_its_node_once_not_every_pass(
    store: Store, clock: FakeClock
) -> None:
    plane = await make_plane(store, clock)
    a, b, c = await plane.node(cpu=2), await plane.node(cpu=1), await plane.node(cpu=1)
    dep = await plane.deployments.create(web(4))  # a full cluster: two on a, one each elsewhere
    await plane.scheduler.run_once()
    await agents_report(plane)
    await plane.scheduler.run_once()
    assert sorted(plane.deployments.get(dep.id).node_ids) == sorted([a, a, b, c])
    await plane.nodes.update(a, NodeChanges(drain=DrainRequest(3600)), ["drain"])
    start = plane.nodes.get(a)

    settling = await passes(plane, a, 4)  # the drain's first reports

    waiting = plane.nodes.get(a)
    assert waiting.drain is not None and waiting.drain.state is DrainState.DRAINING
    assert "wait for room" in waiting.drain.message, waiting.drain
    assert written_without_change([(start.revision, start.drain), *settling]) == []
    store_before = await store.revision()

    later = await passes(plane, a, 10)

    assert [revision for revision, _ in later] == [waiting.revision] * 10, (
        "the node was written though its drain did not change"
    )
    assert plane.nodes.get(a) == waiting
    assert await store.revision() == store_before  # nor anything else
