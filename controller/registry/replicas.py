"""The rules of a deployment's replicas, as pure functions on `Deployment` values: what an
agent's report does to a replica, and what the replicas make of the deployment's status.

    PENDING -place-> ASSIGNED -agent-> STARTING -> RUNNING
                                   \\-> FAILED / EXITED  (counted; placed again after a backoff)
    desired STOP: -> STOPPING -agent-> STOPPED
    node OFFLINE: -> LOST (superseded by a new placement of the same index)"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from controller.models import (
    Deployment,
    DeploymentStatus,
    DesiredState,
    Health,
    Replica,
    ReplicaState,
    StatusChange,
)
from controller.registry.rollouts import note, template_for

MAX_HISTORY = 20
MAX_FAILURES = 5  # in a row, before the deployment is FAILED
REPORTABLE = frozenset(
    {
        ReplicaState.STARTING,
        ReplicaState.RUNNING,
        ReplicaState.STOPPED,
        ReplicaState.EXITED,
        ReplicaState.FAILED,
    }
)
ENDED = frozenset({ReplicaState.EXITED, ReplicaState.FAILED})


@dataclass(frozen=True)
class Report:
    """An agent's word on one replica it runs."""

    deployment_id: str
    index: int
    state: ReplicaState
    message: str = ""
    placement_id: str = ""  # "" from agents that predate placement ids
    generation: int = 0  # the template it runs; 0 from agents that predate generations
    health: Health = Health.UNSPECIFIED


def _matches(replica: Replica, node_id: str, report: Report) -> bool:
    if replica.node_id != node_id:
        return False
    if report.placement_id:
        return replica.placement_id == report.placement_id
    if report.generation and replica.generation and report.generation != replica.generation:
        return False  # of another template than this placement's
    return replica.index == report.index  # an old agent: the first placement of the index


def apply_report(dep: Deployment, node_id: str, report: Report, now: datetime) -> Deployment | None:
    """The deployment after `report` from `node_id`, or None if it changes nothing. A report
    names its placement by id (old agents: by index), so a superseded placement's report never
    changes its replacement. Reports of placements the controller does not know (another node,
    a dropped or superseded-and-dropped placement) are ignored: they are in no assignment of the
    node, so its agent stops them."""
    for position, replica in enumerate(dep.replica_set):
        if not _matches(replica, node_id, report):
            continue
        state = report.state
        if replica.desired is DesiredState.STOP and state in (
            ReplicaState.STARTING,
            ReplicaState.RUNNING,
        ):
            state = ReplicaState.STOPPING  # still running, but on its way out
        health = report.health if state is ReplicaState.RUNNING else Health.UNSPECIFIED
        check = template_for(dep, replica.generation).health_check
        ready = state is ReplicaState.RUNNING and (
            health is Health.HEALTHY if check is not None else health is not Health.UNHEALTHY
        )
        ready_time = (replica.ready_time or now) if ready else None
        if (
            state is replica.state
            and report.message == replica.message
            and health is replica.health
            and ready_time == replica.ready_time
        ):
            return None
        failures = replica.failures
        if state in ENDED and replica.state not in ENDED and replica.desired is DesiredState.RUN:
            failures += 1
        changed = replace(
            replica,
            state=state,
            message=report.message[:1024],
            failures=failures,
            state_time=now if state is not replica.state else replica.state_time,
            health=health,
            ready_time=ready_time,
        )
        replicas = list(dep.replica_set)
        replicas[position] = changed
        return replace(dep, replica_set=tuple(replicas))
    return None


def current(dep: Deployment) -> list[Replica]:
    """The current placement of each replica index, by index."""
    return sorted((r for r in dep.replica_set if not r.superseded), key=lambda r: r.index)


def summarize(dep: Deployment) -> tuple[DeploymentStatus, str]:
    """The deployment's status and reason, from its replicas."""
    if dep.status is DeploymentStatus.STOPPING:
        active = [r for r in dep.replica_set if r.state is not ReplicaState.STOPPED]
        return DeploymentStatus.STOPPING, f"stopping: {len(active)} replicas still to stop"
    replicas = [r for r in current(dep) if r.index < dep.replicas]
    for r in replicas:
        if r.failures >= MAX_FAILURES:
            why = f": {r.message}" if r.message else ""
            return (
                DeploymentStatus.FAILED,
                f"replica {r.index} failed {r.failures} times in a row{why}",
            )
    running = sum(r.state is ReplicaState.RUNNING for r in replicas)
    pending = [r for r in replicas if r.state is ReplicaState.PENDING]
    if pending or len(replicas) < dep.replicas:
        first = pending[0] if pending else None
        why = first.message if first and first.message else "waiting to be scheduled"
        return (
            DeploymentStatus.PENDING,
            f"{len(pending)} of {dep.replicas} replicas not placed: {why}",
        )
    if running == dep.replicas:
        return DeploymentStatus.RUNNING, f"{running}/{dep.replicas} replicas running"
    return DeploymentStatus.SCHEDULED, f"{running}/{dep.replicas} replicas running"


# `status_reason_code` values (Deployment.status_reason_code in the API), for programs.
UNSCHEDULABLE = "UNSCHEDULABLE"
REPLICA_FAILING = "REPLICA_FAILING"
DELETION_REQUESTED = "DELETION_REQUESTED"


def reason_code(dep: Deployment, status: DeploymentStatus) -> str:
    """Why `dep` is in `status` (as `summarize` decided it), for programs: a wait can tell
    "no node fits" without reading the text."""
    if status is DeploymentStatus.STOPPING:
        return DELETION_REQUESTED
    if status is DeploymentStatus.FAILED:
        return REPLICA_FAILING
    if status is DeploymentStatus.PENDING and any(
        r.unschedulable and not r.superseded and not r.node_id and r.index < dep.replicas
        for r in dep.replica_set
    ):
        return UNSCHEDULABLE
    return ""


def with_status(dep: Deployment, now: datetime) -> Deployment:
    """`dep` with its status recomputed; a change of status is recorded in its history."""
    status, reason = summarize(dep)
    rollout = note(dep)
    if rollout and status is not DeploymentStatus.STOPPING:
        reason = f"{reason}; {rollout}"
    code = reason_code(dep, status)
    if status is dep.status and reason == dep.status_reason and code == dep.status_reason_code:
        return dep
    history = dep.history
    if status is not dep.status:
        history = (*history, StatusChange(status, reason, now))[-MAX_HISTORY:]
    return replace(
        dep,
        status=status,
        status_reason=reason,
        status_reason_code=code,
        history=history,
        update_time=now,
    )


def nodes_of(replicas: Iterable[Replica]) -> set[str]:
    return {r.node_id for r in replicas if r.node_id}
