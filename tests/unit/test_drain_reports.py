"""What the leader writes on a draining node (scheduler/drainer.py), through `Scheduler.run_once`
over real registries on a SQLite store and a fake clock: a drain's progress is written when it
changed (state, remaining, moved, stopped, message), never once per pass; a drain that waits
for room writes nothing while it waits, however many passes run; a report the store refuses
keeps its counts for the next one."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

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


async def test_a_refused_report_keeps_its_counts_for_the_next_one(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = await make_plane(store, clock)
    a, b = await plane.node(cpu=2), await plane.node(cpu=2, ready=False)
    dep = await plane.deployments.create(web(2))
    await plane.scheduler.run_once()  # both on a: b is not READY yet
    await agents_report(plane)
    assert plane.deployments.get(dep.id).node_ids == (a, a)
    plane.nodes.stream_opened(b)
    await plane.nodes.update(a, NodeChanges(drain=DrainRequest(3600)), ["drain"])

    # Every report is refused (as when another replica changed the node meanwhile: the store
    # refuses the write) while the replicas move to b.
    record_drain = plane.nodes.record_drain
    refusing = True

    async def refused_meanwhile(node_id: str, progress: Any, fence: Any) -> bool:
        return False if refusing else await record_drain(node_id, progress, fence)

    monkeypatch.setattr(plane.nodes, "record_drain", refused_meanwhile)
    for _ in range(20):
        await passes(plane, a, 1)
        if not plane.deployments.assignments(a):
            break
    assert not plane.deployments.assignments(a), "the replicas did not move"
    assert plane.deployments.get(dep.id).node_ids == (b, b)
    refusing = False

    await passes(plane, a, 1)

    report = plane.nodes.get(a).drain
    assert report is not None and report.state is DrainState.COMPLETE, report
    assert (report.moved, report.stopped, report.remaining) == (2, 0, 0), report
