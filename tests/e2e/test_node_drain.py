"""Node drains against a real controller with real agents (`python -m controller agent`,
simulated driver), observed only through WatchNodes and WatchDeployments.

- Under load (two deployments of 3 replicas spread over 3 nodes), draining a node moves its
  replicas to the others replacement-first: on every deployment event of the whole drain, each
  deployment has at least `replicas - max_unavailable` (3 - 0, the default 25% rounded down)
  replicas RUNNING; the drain reports its progress on the node and turns COMPLETE; the node
  stays cordoned and gets nothing new.
- With no room elsewhere, the replica stays on the draining node until the deadline, which then
  stops it; its replacement waits PENDING until the operator uncordons the node."""

from __future__ import annotations

from functools import partial

from automator67.v1 import deployment_pb2 as dpb
from automator67.v1 import node_pb2

from .test_orchestration import (  # noqa: F401  (fixtures)
    R_RUNNING,
    RUNNING,
    Cluster,
    Env,
    StartAgent,
    cluster_client,
    current,
    start_agent,
    start_fleet,
)

DRAINING, COMPLETE = node_pb2.DRAIN_STATE_DRAINING, node_pb2.DRAIN_STATE_COMPLETE


def app(name: str, replicas: int, cpu: float) -> dpb.Deployment:
    return dpb.Deployment(
        name=name, image="nginx:1.27", replicas=replicas, resources=dpb.Resources(cpu_cores=cpu)
    )


def serving(dep: dpb.Deployment) -> int:
    """Placements that run and are meant to (current ones and handovers not yet stopped)."""
    return sum(
        1
        for r in dep.replica_statuses
        if r.state == R_RUNNING
        and r.desired_state == dpb.REPLICA_DESIRED_STATE_RUN
        and r.index < dep.replicas
    )


def running(cluster: Cluster, dep_id: str, avoiding: str = "") -> bool:
    dep = cluster.deployments.get(dep_id)
    if dep is None or dep.status != RUNNING:
        return False
    now = current(dep)
    return (
        len(now) == dep.replicas
        and all(r.state == R_RUNNING for r in now)
        and all(r.node_id != avoiding for r in now)
        and not any(r.superseded for r in dep.replica_statuses)
    )


def drain_of(cluster: Cluster, node_id: str) -> node_pb2.NodeDrain:
    return cluster.nodes[node_id].drain


async def test_a_drain_under_load_moves_every_replica_with_none_below_the_minimum(
    cluster_client: Env,  # noqa: F811  (the fixture)
    start_agent: StartAgent,  # noqa: F811  (the fixture)
) -> None:
    client, cluster, _ = cluster_client
    a, b, c = await start_fleet(cluster_client, start_agent, 3, cpu_cores=4)
    deps = [await client.create_deployment(app(name, 3, 0.5)) for name in ("web", "api")]
    for dep in deps:
        await cluster.until(f"{dep.name} RUNNING", partial(running, cluster, dep.id))
    target = a
    assert all(target in [r.node_id for r in current(cluster.deployments[d.id])] for d in deps)

    lowest: dict[str, int] = {d.id: 3 for d in deps}
    original = cluster._check

    def check(dep: dpb.Deployment) -> None:  # every deployment event, from now on
        original(dep)
        if dep.id in lowest:
            lowest[dep.id] = min(lowest[dep.id], serving(dep))

    cluster._check = check  # type: ignore[method-assign]
    drained = await client.drain_node(target, deadline_s=600)
    assert drained.unschedulable and drained.drain.state == DRAINING

    await cluster.until(
        "the drain COMPLETE",
        lambda: drain_of(cluster, target).state == COMPLETE,
        wait_s=60,
    )
    for dep in deps:
        await cluster.until(
            f"{dep.name} RUNNING off the node", partial(running, cluster, dep.id, target)
        )

    assert lowest == {d.id: 3 for d in deps}, "fewer replicas than the minimum were running"
    report = drain_of(cluster, target)
    assert (report.replicas_remaining, report.replicas_moved, report.replicas_stopped) == (0, 2, 0)
    assert report.HasField("end_time") and "2 replicas moved" in report.message
    assert cluster.nodes[target].unschedulable  # stays cordoned until the operator says so
    late = await client.create_deployment(app("late", 3, 0.5))
    await cluster.until("late RUNNING", lambda: running(cluster, late.id))
    assert target not in [r.node_id for r in current(cluster.deployments[late.id])]
    assert {r.node_id for r in current(cluster.deployments[late.id])} == {b, c}
    assert cluster.violations == []


async def test_the_deadline_stops_what_cannot_move_and_uncordon_brings_it_back(
    cluster_client: Env,  # noqa: F811  (the fixture)
    start_agent: StartAgent,  # noqa: F811  (the fixture)
) -> None:
    client, cluster, _ = cluster_client
    a, b = await start_fleet(cluster_client, start_agent, 2, cpu_cores=1)
    dep = await client.create_deployment(app("full", 2, 1))  # one per node, no room left
    await cluster.until("full RUNNING", lambda: running(cluster, dep.id))

    await client.drain_node(a, deadline_s=600)
    await cluster.until(
        "the drain waiting for room",
        lambda: "wait for room" in drain_of(cluster, a).message,
    )
    assert serving(cluster.deployments[dep.id]) == 2  # nowhere to go: it keeps serving
    assert drain_of(cluster, a).replicas_remaining == 1
    await client.drain_node(a, deadline_s=0)  # a new deadline: now (Nomad's -force)

    await cluster.until("the drain COMPLETE", lambda: drain_of(cluster, a).state == COMPLETE)
    report = drain_of(cluster, a)
    assert (report.replicas_remaining, report.replicas_stopped) == (0, 1)
    pending = [r for r in current(cluster.deployments[dep.id]) if not r.node_id]
    assert len(pending) == 1 and "cordoned" in pending[0].message

    node = await client.uncordon_node(a)
    assert not node.unschedulable and not node.HasField("drain")
    await cluster.until("full RUNNING again", lambda: running(cluster, dep.id))
    assert sorted(r.node_id for r in current(cluster.deployments[dep.id])) == sorted([a, b])
