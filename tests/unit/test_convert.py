"""Protobuf <-> domain models: requests become specs, resources become messages, credentials go
in and never come out."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from automator67.v1 import deployment_pb2, deployment_service_pb2, node_pb2, node_service_pb2

from controller.api.convert import (
    deployment_spec,
    deployment_stats_to_pb,
    deployment_to_pb,
    node_bytes,
    node_spec,
    node_stats_to_pb,
    node_to_pb,
    node_without_heartbeat_bytes,
)
from controller.errors import InvalidArgumentError
from controller.models import (
    Capabilities,
    Credentials,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    Node,
    NodeSpec,
    NodeStatus,
    PlacementConstraints,
    PlacementStrategy,
    Replica,
    ReplicaState,
    Resources,
    Secret,
    frozen_map,
)
from controller.registry.deployments import DeploymentStats
from controller.registry.node_tally import NodeStats

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
UPDATED = datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC)
BEAT = datetime(2026, 1, 2, 4, 0, 1, 500000, tzinfo=UTC)
NODE_ID = "123e4567-e89b-12d3-a456-426614174000"


def seed_request() -> node_service_pb2.RegisterNodeRequest:
    """The node of the original system's `curl` example."""
    return node_service_pb2.RegisterNodeRequest(
        node=node_pb2.Node(
            provider="render",
            endpoint="https://api.render.com",
            region="us-east-1",
            credentials=node_pb2.Credentials(
                oauth_token_encrypted="token123",
                oauth_provider="github",
                oauth_expires_at=1700000000000,
            ),
            capabilities=node_pb2.Capabilities(
                cpu_cores=4, memory_gb=8, disk_gb=50, network_bandwidth="1Gbps"
            ),
        )
    )


def test_the_seed_request_becomes_its_node_spec() -> None:
    assert node_spec(seed_request()) == NodeSpec(
        provider="render",
        endpoint="https://api.render.com",
        region="us-east-1",
        capabilities=Capabilities(
            cpu_cores=4.0, memory_gb=8.0, disk_gb=50.0, network_bandwidth="1Gbps"
        ),
        labels=frozen_map(),
        credentials=Credentials(Secret("token123"), "github", 1700000000000),
    )


def test_labels_are_copied_into_a_sorted_frozen_map() -> None:
    request = seed_request()
    request.node.labels.update({"zone": "a", "example.com/owner": "team-a"})
    labels = node_spec(request).labels
    assert list(labels.items()) == [("example.com/owner", "team-a"), ("zone", "a")]
    with pytest.raises(TypeError):
        labels["zone"] = "b"  # type: ignore[index]


def test_left_out_capabilities_and_credentials_become_none() -> None:
    request = node_service_pb2.RegisterNodeRequest(node=node_pb2.Node(provider="aws"))
    spec = node_spec(request)
    assert spec.capabilities is None
    assert spec.credentials is None


def test_empty_but_present_credentials_are_kept_for_validation_to_refuse() -> None:
    request = seed_request()
    request.node.credentials.Clear()
    request.node.credentials.SetInParent()
    creds = node_spec(request).credentials
    assert creds == Credentials(Secret(""), "", 0)


def test_output_only_fields_of_a_registration_are_ignored() -> None:
    request = seed_request()
    request.node.id = NODE_ID
    request.node.status = node_pb2.NODE_STATUS_READY
    request.node.has_credentials = False
    request.node.etag = "7"
    request.node.create_time.FromDatetime(CREATED)
    assert node_spec(request) == node_spec(seed_request())


def test_a_registration_without_a_node_is_a_violation_on_node() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        node_spec(node_service_pb2.RegisterNodeRequest(request_id="r1"))
    assert [v.field for v in caught.value.violations] == ["node"]


def a_node(**changes: Any) -> Node:
    node = Node(
        id=NODE_ID,
        provider="render",
        endpoint="https://api.render.com",
        region="us-east-1",
        capabilities=Capabilities(4.0, 8.0, 50.0, "1Gbps"),
        labels=frozen_map({"zone": "a"}),
        credentials=Credentials(Secret("token123"), "github", 1700000000000),
        status=NodeStatus.READY,
        create_time=CREATED,
        update_time=UPDATED,
        last_heartbeat_time=BEAT,
        revision=42,
    )
    return replace(node, **changes)


def test_a_node_message_never_carries_credentials() -> None:
    pb = node_to_pb(a_node())
    assert not pb.HasField("credentials")
    assert pb.has_credentials
    assert b"token123" not in pb.SerializeToString()
    assert "token123" not in str(pb)


def test_a_node_without_credentials_says_so() -> None:
    pb = node_to_pb(a_node(credentials=None))
    assert not pb.HasField("credentials")
    assert not pb.has_credentials


def test_a_node_message_carries_every_other_field() -> None:
    pb = node_to_pb(a_node())
    assert (pb.id, pb.provider, pb.endpoint, pb.region) == (
        NODE_ID,
        "render",
        "https://api.render.com",
        "us-east-1",
    )
    assert pb.capabilities == node_pb2.Capabilities(
        cpu_cores=4.0, memory_gb=8.0, disk_gb=50.0, network_bandwidth="1Gbps"
    )
    assert dict(pb.labels) == {"zone": "a"}
    assert pb.status == node_pb2.NODE_STATUS_READY
    assert pb.create_time.ToDatetime(tzinfo=UTC) == CREATED
    assert pb.update_time.ToDatetime(tzinfo=UTC) == UPDATED
    assert pb.last_heartbeat_time.ToDatetime(tzinfo=UTC) == BEAT
    assert pb.etag == "42"


def test_a_node_that_never_beat_has_no_heartbeat_time() -> None:
    assert not node_to_pb(a_node(last_heartbeat_time=None)).HasField("last_heartbeat_time")


ENCODED_NODES = {
    "with every field": a_node(),
    "that never beat": a_node(last_heartbeat_time=None),
    "without credentials or labels": a_node(credentials=None, labels=frozen_map()),
    "with many labels": a_node(labels=frozen_map({f"k{i}": f"v{i}" for i in range(20)})),
}


@pytest.mark.parametrize("node", ENCODED_NODES.values(), ids=list(ENCODED_NODES))
def test_a_node_encoded_once_per_change_is_its_message(node: Node) -> None:
    # The part a revision fixes is encoded once; the live heartbeat time is appended per read.
    encoded = node_bytes(node, node_without_heartbeat_bytes(node))
    assert node_pb2.Node.FromString(encoded) == node_to_pb(node)


def test_a_newer_heartbeat_time_goes_onto_the_same_encoding() -> None:
    old = a_node()
    without = node_without_heartbeat_bytes(old)
    later = replace(old, last_heartbeat_time=datetime(2026, 1, 3, tzinfo=UTC))
    assert node_pb2.Node.FromString(node_bytes(later, without)) == node_to_pb(later)
    assert node_pb2.Node.FromString(without) == node_to_pb(replace(old, last_heartbeat_time=None))


NODE_STATUSES = {
    NodeStatus.PENDING: node_pb2.NODE_STATUS_PENDING,
    NodeStatus.READY: node_pb2.NODE_STATUS_READY,
    NodeStatus.SUSPECT: node_pb2.NODE_STATUS_SUSPECT,
    NodeStatus.OFFLINE: node_pb2.NODE_STATUS_OFFLINE,
}


@pytest.mark.parametrize("status", list(NodeStatus), ids=lambda s: s.value)
def test_every_node_status_has_its_proto_value(status: NodeStatus) -> None:
    assert node_to_pb(a_node(status=status)).status == NODE_STATUSES[status]


def test_node_stats_become_their_message() -> None:
    stats = NodeStats(
        total=3,
        by_status=Counter({"READY": 2, "PENDING": 1}),
        by_provider=Counter({"aws": 3}),
        by_region=Counter({"eu": 1, "": 2}),
        total_capacity=Resources(6.0, 12.0, 30.0),
        ready_capacity=Resources(4.0, 8.0, 20.0),
    )
    pb = node_stats_to_pb(stats)
    assert pb.total == 3
    assert dict(pb.by_status) == {"NODE_STATUS_READY": 2, "NODE_STATUS_PENDING": 1}
    assert dict(pb.by_provider) == {"aws": 3}
    assert dict(pb.by_region) == {"eu": 1, "": 2}
    assert pb.total_capacity == node_service_pb2.Capacity(cpu_cores=6, memory_gb=12, disk_gb=30)
    assert pb.ready_capacity == node_service_pb2.Capacity(cpu_cores=4, memory_gb=8, disk_gb=20)


def create_request(**fields: object) -> deployment_service_pb2.CreateDeploymentRequest:
    return deployment_service_pb2.CreateDeploymentRequest(
        deployment=deployment_pb2.Deployment(name="web", image="nginx", **fields)  # type: ignore[arg-type]
    )


def test_a_creation_without_a_deployment_is_a_violation_on_deployment() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        deployment_spec(deployment_service_pb2.CreateDeploymentRequest(request_id="r1"))
    assert [v.field for v in caught.value.violations] == ["deployment"]


def test_an_unknown_strategy_number_is_a_violation_on_deployment_strategy() -> None:
    request = create_request(strategy=deployment_pb2.PlacementStrategy.ValueType(99))
    with pytest.raises(InvalidArgumentError) as caught:
        deployment_spec(request)
    [violation] = caught.value.violations
    assert violation.field == "deployment.strategy"
    assert "99" in violation.description


STRATEGIES = {
    "unspecified means the default": (
        deployment_pb2.PLACEMENT_STRATEGY_UNSPECIFIED,
        PlacementStrategy.DEFAULT,
    ),
    "spread": (deployment_pb2.PLACEMENT_STRATEGY_SPREAD, PlacementStrategy.SPREAD),
    "binpack": (deployment_pb2.PLACEMENT_STRATEGY_BINPACK, PlacementStrategy.BINPACK),
}


@pytest.mark.parametrize(("number", "strategy"), STRATEGIES.values(), ids=list(STRATEGIES))
def test_every_known_strategy_maps_to_its_model(number: int, strategy: PlacementStrategy) -> None:
    assert deployment_spec(create_request(strategy=number)).strategy is strategy


def test_unset_replicas_mean_one() -> None:
    assert deployment_spec(create_request()).replicas == 1


def test_explicit_zero_replicas_stay_zero() -> None:
    assert deployment_spec(create_request(replicas=0)).replicas == 0


def test_explicit_replicas_are_kept() -> None:
    assert deployment_spec(create_request(replicas=7)).replicas == 7


def test_a_creation_request_becomes_its_spec() -> None:
    request = deployment_service_pb2.CreateDeploymentRequest(
        deployment=deployment_pb2.Deployment(
            name="web",
            image="nginx:1.27",
            command=["nginx"],
            args=["-g", "daemon off;"],
            env={"PORT": "80", "A": "1"},
            resources=deployment_pb2.Resources(cpu_cores=0.5, memory_gb=1, disk_gb=2),
            replicas=3,
            constraints=deployment_pb2.PlacementConstraints(
                provider="aws", region="eu", labels={"zone": "a"}
            ),
            strategy=deployment_pb2.PLACEMENT_STRATEGY_BINPACK,
        ),
        request_id="r1",
    )
    assert deployment_spec(request) == DeploymentSpec(
        name="web",
        image="nginx:1.27",
        command=("nginx",),
        args=("-g", "daemon off;"),
        env=frozen_map({"A": "1", "PORT": "80"}),
        resources=Resources(0.5, 1.0, 2.0),
        replicas=3,
        constraints=PlacementConstraints("aws", "eu", frozen_map({"zone": "a"})),
        strategy=PlacementStrategy.BINPACK,
    )


def test_output_only_fields_of_a_creation_are_ignored() -> None:
    request = create_request(
        id=NODE_ID,
        status=deployment_pb2.DEPLOYMENT_STATUS_RUNNING,
        status_reason="x",
        node_ids=[NODE_ID],
        etag="3",
    )
    assert deployment_spec(request) == deployment_spec(create_request())


DEPLOYMENT = Deployment(
    id=NODE_ID,
    name="web",
    image="nginx:1.27",
    command=("nginx",),
    args=("-g", "daemon off;"),
    env=frozen_map({"PORT": "80"}),
    resources=Resources(0.5, 1.0, 2.0),
    replicas=0,
    constraints=PlacementConstraints("aws", "eu", frozen_map({"zone": "a"})),
    strategy=PlacementStrategy.SPREAD,
    status=DeploymentStatus.SCHEDULED,
    status_reason="placed on 2 nodes",
    replica_set=(
        Replica(0, "n1", ReplicaState.RUNNING),
        Replica(1, "n2", ReplicaState.ASSIGNED),
        Replica(1, "n0", ReplicaState.LOST, superseded=True),
    ),
    create_time=CREATED,
    update_time=UPDATED,
    revision=9,
)


@pytest.mark.parametrize("strategy", list(PlacementStrategy), ids=lambda s: s.value)
@pytest.mark.parametrize("replicas", [0, 1, 1000])
def test_a_deployment_round_trips_through_its_message_back_to_its_spec(
    strategy: PlacementStrategy, replicas: int
) -> None:
    dep = replace(DEPLOYMENT, strategy=strategy, replicas=replicas)
    request = deployment_service_pb2.CreateDeploymentRequest(deployment=deployment_to_pb(dep))
    assert deployment_spec(request) == DeploymentSpec(
        name=dep.name,
        image=dep.image,
        command=dep.command,
        args=dep.args,
        env=dep.env,
        resources=dep.resources,
        replicas=replicas,
        constraints=dep.constraints,
        strategy=strategy,
    )


def test_a_deployment_message_carries_its_output_only_fields() -> None:
    pb = deployment_to_pb(DEPLOYMENT)
    assert pb.id == NODE_ID
    assert pb.status == deployment_pb2.DEPLOYMENT_STATUS_SCHEDULED
    assert pb.status_reason == "placed on 2 nodes"
    assert list(pb.node_ids) == ["n1", "n2"]
    assert pb.create_time.ToDatetime(tzinfo=UTC) == CREATED
    assert pb.update_time.ToDatetime(tzinfo=UTC) == UPDATED
    assert pb.etag == "9"
    assert pb.HasField("replicas") and pb.replicas == 0


@pytest.mark.parametrize("status", list(DeploymentStatus), ids=lambda s: s.value)
def test_every_deployment_status_has_its_proto_value(status: DeploymentStatus) -> None:
    pb = deployment_to_pb(replace(DEPLOYMENT, status=status))
    assert deployment_pb2.DeploymentStatus.Name(pb.status) == f"DEPLOYMENT_STATUS_{status.value}"


def test_deployment_stats_become_their_message() -> None:
    stats = DeploymentStats(
        total=2,
        by_status=Counter({"RUNNING": 1, "PENDING": 1}),
        replicas_requested=5,
        replicas_placed=3,
    )
    pb = deployment_stats_to_pb(stats)
    assert pb.total == 2
    assert dict(pb.by_status) == {"DEPLOYMENT_STATUS_RUNNING": 1, "DEPLOYMENT_STATUS_PENDING": 1}
    assert (pb.replicas_requested, pb.replicas_placed) == (5, 3)
