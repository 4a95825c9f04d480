"""The store contract: every field of a resource comes back as it went in."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from controller.models import (
    Capabilities,
    Credentials,
    Deployment,
    DeploymentStatus,
    DesiredState,
    Node,
    NodeStatus,
    PlacementConstraints,
    PlacementStrategy,
    Replica,
    ReplicaState,
    Resources,
    Secret,
    StatusChange,
    frozen_map,
)
from controller.store.base import Store, Table

from .conftest import LATER_TIME, UPDATE_TIME, Reopen, new_deployment, new_node

CREDENTIALS = Credentials(
    oauth_token=Secret("tok"), oauth_provider="github", oauth_expires_at_ms=1_767_225_600_000
)
AWKWARD_MAP = frozen_map(
    {
        "zone": "us-east-1a",
        "empty": "",
        "quoted": 'say "hi"\\n',
        "multi-line": "one\ntwo",
        "unicode": "héllo wörld ✓",
        "example.com/owner": "team-a",
    }
)


async def assert_round_trips(table: Table[Any], resource: Any) -> None:
    """Creates `resource` and checks that create, get and list_all return it unchanged, then
    checks the same for an update back to the same value."""
    created = await table.create(resource)
    assert created == replace(resource, revision=created.revision)
    assert await table.get(resource.id) == created
    assert created in await table.list_all()

    updated = await table.update(resource, expect_revision=created.revision)
    assert updated == replace(resource, revision=updated.revision)
    assert await table.get(resource.id) == updated


async def test_a_node_with_credentials_round_trips(store: Store) -> None:
    await assert_round_trips(store.nodes, replace(new_node(), credentials=CREDENTIALS))


async def test_a_node_with_credentials_round_trips_through_a_reopen(
    store: Store, reopen: Reopen
) -> None:
    created = await store.nodes.create(replace(new_node(), credentials=CREDENTIALS))

    store = await reopen()

    stored = await store.nodes.get(created.id)
    assert stored == created
    assert stored is not None and stored.credentials is not None
    assert stored.credentials.oauth_token.reveal() == "tok"


async def test_a_node_without_credentials_round_trips(store: Store) -> None:
    await assert_round_trips(store.nodes, replace(new_node(), credentials=None))


async def test_node_credentials_can_be_added_and_removed(store: Store) -> None:
    created = await store.nodes.create(new_node())

    with_credentials = await store.nodes.update(
        replace(created, credentials=CREDENTIALS), created.revision
    )
    assert await store.nodes.get(created.id) == with_credentials

    without_credentials = await store.nodes.update(
        replace(created, credentials=None), with_credentials.revision
    )
    assert await store.nodes.get(created.id) == without_credentials


async def test_node_labels_round_trip(store: Store) -> None:
    await assert_round_trips(store.nodes, replace(new_node(), labels=AWKWARD_MAP))


async def test_node_capabilities_round_trip(store: Store) -> None:
    capabilities = Capabilities(
        cpu_cores=2.5, memory_gb=7.75, disk_gb=120.125, network_bandwidth="10Gbps"
    )
    await assert_round_trips(store.nodes, replace(new_node(), capabilities=capabilities))


@pytest.mark.parametrize("heartbeat", [None, LATER_TIME], ids=["no-heartbeat", "heartbeat"])
async def test_the_last_heartbeat_time_of_a_node_round_trips(
    store: Store, heartbeat: datetime | None
) -> None:
    await assert_round_trips(store.nodes, replace(new_node(), last_heartbeat_time=heartbeat))


@pytest.mark.parametrize("status", list(NodeStatus), ids=lambda status: status.name)
async def test_every_node_status_round_trips(store: Store, status: NodeStatus) -> None:
    await assert_round_trips(store.nodes, replace(new_node(), status=status))


async def test_a_fully_populated_node_round_trips(store: Store) -> None:
    node = Node(
        id=new_node().id,
        provider="gcp",
        endpoint="node-7.internal:7070",
        region="europe-west4",
        capabilities=Capabilities(8.0, 32.0, 500.0, "1Gbps"),
        create_time=new_node().create_time,
        update_time=LATER_TIME,
        labels=AWKWARD_MAP,
        credentials=CREDENTIALS,
        status=NodeStatus.SUSPECT,
        last_heartbeat_time=LATER_TIME,
    )
    await assert_round_trips(store.nodes, node)


async def test_deployment_env_and_constraint_labels_round_trip(store: Store) -> None:
    deployment = replace(
        new_deployment(),
        env=AWKWARD_MAP,
        constraints=PlacementConstraints(labels=AWKWARD_MAP),
    )
    await assert_round_trips(store.deployments, deployment)


@pytest.mark.parametrize("status", list(DeploymentStatus), ids=lambda status: status.name)
async def test_every_deployment_status_round_trips(store: Store, status: DeploymentStatus) -> None:
    await assert_round_trips(store.deployments, replace(new_deployment(), status=status))


@pytest.mark.parametrize("strategy", list(PlacementStrategy), ids=lambda strategy: strategy.name)
async def test_every_placement_strategy_round_trips(
    store: Store, strategy: PlacementStrategy
) -> None:
    await assert_round_trips(store.deployments, replace(new_deployment(), strategy=strategy))


async def test_a_fully_populated_deployment_round_trips(store: Store) -> None:
    template = new_deployment()
    deployment = Deployment(
        id=template.id,
        name="api-server",
        create_time=template.create_time,
        update_time=LATER_TIME,
        image="registry.example.com/api:2.3.1",
        command=("python", "-m", "api"),
        args=("--port", "8080", "--greeting", "héllo wörld"),
        env=frozen_map({"PORT": "8080", "LOG_LEVEL": "debug"}),
        resources=Resources(cpu_cores=1.5, memory_gb=2.25, disk_gb=10.0),
        replicas=3,
        constraints=PlacementConstraints(
            provider="aws", region="us-east-1", labels=frozen_map({"tier": "gpu"})
        ),
        strategy=PlacementStrategy.BINPACK,
        status=DeploymentStatus.FAILED,
        status_reason='no node fits "api-server": needs 1.5 cores',
        replica_set=(
            Replica(0, new_node().id, ReplicaState.RUNNING, state_time=UPDATE_TIME),
            Replica(
                1,
                new_node().id,
                ReplicaState.FAILED,
                DesiredState.RUN,
                message="exit 3",
                failures=2,
                retry_at=LATER_TIME,
                avoid=(new_node().id,),
            ),
            Replica(1, new_node().id, ReplicaState.LOST, DesiredState.STOP, superseded=True),
        ),
        history=(StatusChange(DeploymentStatus.FAILED, "replica 1 failed", LATER_TIME),),
        generation=4,
        observed_generation=3,
        template_generation=2,
    )
    await assert_round_trips(store.deployments, deployment)
