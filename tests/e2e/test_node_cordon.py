"""Cordon (UpdateNode) against a real controller with real agents (`python -m controller agent`,
simulated driver), through the Python SDK: labels and `unschedulable` change under a field mask
and an etag, WatchNodes shows the change, bad requests name their field, and the scheduler
places nothing new on a cordoned node while the replicas already there stay."""

from __future__ import annotations

import pytest
from automator67.errors import AbortedError, InvalidArgumentError
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


def app(name: str, replicas: int) -> dpb.Deployment:
    return dpb.Deployment(
        name=name, image="nginx:1.27", replicas=replicas, resources=dpb.Resources(cpu_cores=0.1)
    )


def nodes_of(dep: dpb.Deployment) -> list[str]:
    return sorted(r.node_id for r in current(dep))


async def test_update_node_changes_labels_and_cordon_under_mask_and_etag(
    cluster_client: Env,  # noqa: F811  (the fixture)
    start_agent: StartAgent,  # noqa: F811  (the fixture)
) -> None:
    client, cluster, _ = cluster_client
    (node_id,) = await start_fleet(cluster_client, start_agent, 1)
    node = await client.get_node(node_id)

    changed = await client.update_node(
        node_pb2.Node(id=node_id, etag=node.etag, labels={"tier": "gpu"}, unschedulable=True),
        ["labels", "unschedulable"],
    )

    assert dict(changed.labels) == {"tier": "gpu"} and changed.unschedulable
    assert changed.etag != node.etag
    await cluster.until("the watch shows the cordon", lambda: cluster.nodes[node_id].unschedulable)
    assert dict(cluster.nodes[node_id].labels) == {"tier": "gpu"}
    with pytest.raises(AbortedError) as stale:
        await client.update_node(node_pb2.Node(id=node_id, etag=node.etag), ["unschedulable"])
    assert stale.value.reason == "ETAG_MISMATCH"
    with pytest.raises(InvalidArgumentError) as bad_mask:
        await client.update_node(node_pb2.Node(id=node_id), ["provider"])
    assert [v.field for v in bad_mask.value.field_violations] == ["update_mask"]
    with pytest.raises(InvalidArgumentError) as bad_label:
        await client.update_node(node_pb2.Node(id=node_id, labels={"a b": "x"}), ["labels"])
    assert [v.field for v in bad_label.value.field_violations] == ["node.labels['a b']"]
    drained = await client.drain_node(node_id, deadline_s=600)
    assert drained.drain.state == node_pb2.DRAIN_STATE_DRAINING
    # Nothing runs there: the leader completes the drain at once (and it stays cordoned).
    await cluster.until(
        "the drain COMPLETE",
        lambda: cluster.nodes[node_id].drain.state == node_pb2.DRAIN_STATE_COMPLETE,
    )
    assert cluster.nodes[node_id].unschedulable
    uncordoned = await client.uncordon_node(node_id)
    assert not uncordoned.unschedulable and not uncordoned.HasField("drain")
    assert (await client.get_node(node_id)).labels["tier"] == "gpu"


async def test_nothing_new_is_placed_on_a_cordoned_node_and_its_replicas_stay(
    cluster_client: Env,  # noqa: F811  (the fixture)
    start_agent: StartAgent,  # noqa: F811  (the fixture)
) -> None:
    client, cluster, _ = cluster_client
    a, b = await start_fleet(cluster_client, start_agent, 2)
    first = await client.create_deployment(app("first", 2))
    await _running(cluster, first.id)
    assert nodes_of(cluster.deployments[first.id]) == sorted([a, b])  # spread: one on each

    await client.cordon_node(a)
    second = await client.create_deployment(app("second", 3))
    await _running(cluster, second.id)

    assert set(nodes_of(cluster.deployments[second.id])) == {b}
    assert nodes_of(cluster.deployments[first.id]) == sorted([a, b])  # it kept its replica
    await client.uncordon_node(a)
    third = await client.create_deployment(app("third", 2))
    await _running(cluster, third.id)
    assert nodes_of(cluster.deployments[third.id]) == sorted([a, b])
    assert not cluster.violations


async def _running(cluster: Cluster, deployment_id: str) -> None:
    def ready() -> bool:
        dep = cluster.deployments.get(deployment_id)
        return (
            dep is not None
            and dep.status == RUNNING
            and all(r.state == R_RUNNING for r in current(dep))
        )

    await cluster.until(f"{deployment_id} RUNNING", ready)
