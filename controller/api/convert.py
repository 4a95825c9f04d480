"""Protobuf <-> domain models. Output-only fields of requests are ignored; credentials go in and
never come out (responses only say whether a node has them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from automator67.v1 import (
    deployment_pb2,
    deployment_service_pb2,
    heartbeat_pb2,
    node_pb2,
    node_service_pb2,
)

from controller.api.node_update_convert import drain_to_pb
from controller.api.rollout_convert import (
    fill_deployment,
    fill_replica,
    health_check_of,
    health_check_pb,
    health_of,
    update_strategy_of,
)
from controller.api.timestamps import timestamp_pb
from controller.errors import InvalidArgumentError
from controller.models import (
    Capabilities,
    Credentials,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    DesiredState,
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
from controller.registry.replicas import REPORTABLE, Report
from controller.registry.rollouts import template_for

_STRATEGIES = {
    deployment_pb2.PLACEMENT_STRATEGY_UNSPECIFIED: PlacementStrategy.DEFAULT,
    deployment_pb2.PLACEMENT_STRATEGY_SPREAD: PlacementStrategy.SPREAD,
    deployment_pb2.PLACEMENT_STRATEGY_BINPACK: PlacementStrategy.BINPACK,
}
_STRATEGY_VALUES = {v: k for k, v in _STRATEGIES.items()}


# Nodes


def node_spec(pb: node_service_pb2.RegisterNodeRequest) -> NodeSpec:
    if not pb.HasField("node"):
        raise InvalidArgumentError.single("node", "is required")
    node = pb.node
    caps = None
    if node.HasField("capabilities"):
        c = node.capabilities
        caps = Capabilities(c.cpu_cores, c.memory_gb, c.disk_gb, c.network_bandwidth)
    creds = None
    if node.HasField("credentials"):
        cr = node.credentials
        creds = Credentials(
            Secret(cr.oauth_token_encrypted), cr.oauth_provider, cr.oauth_expires_at
        )
    return NodeSpec(
        provider=node.provider,
        endpoint=node.endpoint,
        region=node.region,
        capabilities=caps,
        labels=frozen_map(node.labels),
        credentials=creds,
    )


def node_status_pb(status: NodeStatus) -> node_pb2.NodeStatus.ValueType:
    return node_pb2.NodeStatus.Value(f"NODE_STATUS_{status.value}")


def node_to_pb(node: Node) -> node_pb2.Node:
    caps = node.capabilities
    return node_pb2.Node(
        id=node.id,
        provider=node.provider,
        endpoint=node.endpoint,
        region=node.region,
        capabilities=node_pb2.Capabilities(
            cpu_cores=caps.cpu_cores,
            memory_gb=caps.memory_gb,
            disk_gb=caps.disk_gb,
            network_bandwidth=caps.network_bandwidth,
        ),
        labels=dict(node.labels),
        status=node_status_pb(node.status),
        has_credentials=node.credentials is not None,
        create_time=timestamp_pb(node.create_time),
        update_time=timestamp_pb(node.update_time),
        last_heartbeat_time=timestamp_pb(node.last_heartbeat_time),
        etag=str(node.revision),
        unschedulable=node.unschedulable,
        drain=drain_to_pb(node.drain),
    )


def node_without_heartbeat_bytes(node: Node) -> bytes:
    """The node's message serialized, without `last_heartbeat_time`: what a revision of the
    node fixes, so it can be encoded once per change (`NodeRegistry.derived`)."""
    message = node_to_pb(node)
    message.ClearField("last_heartbeat_time")
    return message.SerializeToString()


def node_bytes(node: Node, without_heartbeat: bytes) -> bytes:
    """`node_to_pb(node)` serialized, from its encoding without the heartbeat time: serialized
    messages concatenate as a merge, so the heartbeat time is appended as a message of its own."""
    if node.last_heartbeat_time is None:
        return without_heartbeat
    beat = node_pb2.Node(last_heartbeat_time=timestamp_pb(node.last_heartbeat_time))
    return without_heartbeat + beat.SerializeToString()


def _counts(counter: Counter[str], prefix: str = "") -> Mapping[str, int]:
    return {f"{prefix}{key}": count for key, count in counter.items()}


def _capacity(res: Resources) -> node_service_pb2.Capacity:
    return node_service_pb2.Capacity(
        cpu_cores=res.cpu_cores, memory_gb=res.memory_gb, disk_gb=res.disk_gb
    )


def node_stats_to_pb(
    stats: NodeStats, replica_id: str = "", leader_id: str = ""
) -> node_service_pb2.GetNodeStatsResponse:
    return node_service_pb2.GetNodeStatsResponse(
        replica_id=replica_id,
        leader_id=leader_id,
        total=stats.total,
        by_status=_counts(stats.by_status, "NODE_STATUS_"),
        by_provider=_counts(stats.by_provider),
        by_region=_counts(stats.by_region),
        total_capacity=_capacity(stats.total_capacity),
        ready_capacity=_capacity(stats.ready_capacity),
        self_suspected=stats.self_suspected,
    )


# Deployments


def deployment_spec(
    pb: deployment_service_pb2.CreateDeploymentRequest
    | deployment_service_pb2.UpdateDeploymentRequest,
) -> DeploymentSpec:
    if not pb.HasField("deployment"):
        raise InvalidArgumentError.single("deployment", "is required")
    dep = pb.deployment
    strategy = _STRATEGIES.get(dep.strategy)
    if strategy is None:
        raise InvalidArgumentError.single("deployment.strategy", f"unknown value {dep.strategy}")
    res, con = dep.resources, dep.constraints
    return DeploymentSpec(
        name=dep.name,
        image=dep.image,
        command=tuple(dep.command),
        args=tuple(dep.args),
        env=frozen_map(dep.env),
        resources=Resources(res.cpu_cores, res.memory_gb, res.disk_gb),
        replicas=dep.replicas if dep.HasField("replicas") else 1,
        constraints=PlacementConstraints(con.provider, con.region, frozen_map(con.labels)),
        strategy=strategy,
        update_strategy=update_strategy_of(dep),
        health_check=health_check_of(dep),
        paused=dep.paused,
    )


def deployment_to_pb(dep: Deployment) -> deployment_pb2.Deployment:
    pb = _deployment_pb(dep)
    fill_deployment(pb, dep)
    return pb


def _deployment_pb(dep: Deployment) -> deployment_pb2.Deployment:
    res, con = dep.resources, dep.constraints
    return deployment_pb2.Deployment(
        id=dep.id,
        name=dep.name,
        image=dep.image,
        command=list(dep.command),
        args=list(dep.args),
        env=dict(dep.env),
        resources=deployment_pb2.Resources(
            cpu_cores=res.cpu_cores, memory_gb=res.memory_gb, disk_gb=res.disk_gb
        ),
        replicas=dep.replicas,
        constraints=deployment_pb2.PlacementConstraints(
            provider=con.provider, region=con.region, labels=dict(con.labels)
        ),
        strategy=_STRATEGY_VALUES[dep.strategy],
        status=_deployment_status_pb(dep.status),
        status_reason=dep.status_reason,
        status_reason_code=dep.status_reason_code,
        node_ids=list(dep.node_ids),
        create_time=timestamp_pb(dep.create_time),
        update_time=timestamp_pb(dep.update_time),
        etag=str(dep.revision),
        replica_statuses=[_replica_pb(r) for r in dep.replica_set],
        history=[
            deployment_pb2.StatusChange(
                status=_deployment_status_pb(h.status), reason=h.reason, time=timestamp_pb(h.time)
            )
            for h in dep.history
        ],
    )


def _deployment_status_pb(status: DeploymentStatus) -> deployment_pb2.DeploymentStatus.ValueType:
    return deployment_pb2.DeploymentStatus.Value(f"DEPLOYMENT_STATUS_{status.value}")


def _replica_pb(r: Replica) -> deployment_pb2.Replica:
    pb = _replica_core_pb(r)
    fill_replica(pb, r)
    return pb


def _replica_core_pb(r: Replica) -> deployment_pb2.Replica:
    return deployment_pb2.Replica(
        index=r.index,
        node_id=r.node_id,
        state=deployment_pb2.ReplicaState.Value(f"REPLICA_STATE_{r.state.value}"),
        desired_state=desired_state_pb(r.desired),
        message=r.message,
        failures=r.failures,
        superseded=r.superseded,
        placement_id=r.placement_id,
    )


def desired_state_pb(desired: DesiredState) -> deployment_pb2.ReplicaDesiredState.ValueType:
    return deployment_pb2.ReplicaDesiredState.Value(f"REPLICA_DESIRED_STATE_{desired.value}")


def assignment_spec_pb(
    dep: Deployment, replica: Replica | None = None
) -> deployment_pb2.Deployment:
    """What an agent needs to run a placement: the template it runs (during a rollout an old
    placement keeps its old one), without the status fields. `etag` and `template_generation`
    name the template: they change only when it does (an agent restarts a placement on a
    change; controllers and placements from before generations: the current template)."""
    generation = replica.generation if replica is not None and replica.generation else 0
    template = template_for(dep, generation)
    spec = deployment_to_pb(dep)
    for field in (
        "status",
        "status_reason",
        "status_reason_code",
        "node_ids",
        "replica_statuses",
        "history",
        "rollout_history",
        "updated_replicas",
        "ready_replicas",
        "available_replicas",
    ):
        spec.ClearField(field)
    spec.image = template.image
    del spec.command[:]
    spec.command.extend(template.command)
    del spec.args[:]
    spec.args.extend(template.args)
    spec.env.clear()
    spec.env.update(template.env)
    spec.resources.CopyFrom(
        deployment_pb2.Resources(
            cpu_cores=template.resources.cpu_cores,
            memory_gb=template.resources.memory_gb,
            disk_gb=template.resources.disk_gb,
        )
    )
    spec.ClearField("health_check")
    check = health_check_pb(template.health_check)
    if check is not None:
        spec.health_check.CopyFrom(check)
    spec.template_generation = generation or dep.template_generation
    spec.etag = str(spec.template_generation)
    return spec


REPORTABLE_STATES_PB = frozenset(
    deployment_pb2.ReplicaState.Value(f"REPLICA_STATE_{state.value}") for state in REPORTABLE
)


def report_of(pb: heartbeat_pb2.ReplicaReport) -> Report:
    state = ReplicaState(deployment_pb2.ReplicaState.Name(pb.state).removeprefix("REPLICA_STATE_"))
    return Report(
        pb.deployment_id,
        pb.replica_index,
        state,
        pb.message,
        pb.placement_id,
        pb.generation,
        health_of(pb.health),
    )


def deployment_update(
    pb: deployment_service_pb2.UpdateDeploymentRequest,
) -> tuple[str, DeploymentSpec, list[str], str]:
    """(id, new values, update mask paths, etag) of an update request."""
    spec = deployment_spec(pb)
    return pb.deployment.id, spec, list(pb.update_mask.paths), pb.deployment.etag


def deployment_stats_to_pb(
    stats: DeploymentStats,
) -> deployment_service_pb2.GetDeploymentStatsResponse:
    return deployment_service_pb2.GetDeploymentStatsResponse(
        total=stats.total,
        by_status=_counts(stats.by_status, "DEPLOYMENT_STATUS_"),
        replicas_requested=stats.replicas_requested,
        replicas_placed=stats.replicas_placed,
    )
