"""Protobuf <-> domain for rolling updates (issue 14): the update strategy (`IntOrPercent` as
Kubernetes writes it: a count, or "25%"), the health check, generations, replica counts and the
rollout history."""

from __future__ import annotations

import re

from automator67.v1 import deployment_pb2
from google.protobuf import duration_pb2

from controller.api.timestamps import timestamp_pb
from controller.errors import InvalidArgumentError
from controller.models import (
    Deployment,
    Health,
    HealthCheck,
    IntOrPercent,
    Replica,
    Rollout,
    UpdateStrategy,
)
from controller.registry.rollouts import spec_hash

DEFAULTS = UpdateStrategy()
_PERCENT = re.compile(r"(\d{1,3})%")


def _int_or_percent(
    pb: deployment_pb2.IntOrPercent, has: bool, default: IntOrPercent, path: str
) -> IntOrPercent:
    if not has or pb.WhichOneof("value") is None:
        return default
    if pb.WhichOneof("value") == "count":
        return IntOrPercent(pb.count)
    match = _PERCENT.fullmatch(pb.percent)
    if match is None:
        raise InvalidArgumentError.single(
            f"{path}.percent", f'must be a percentage like "25%" (got {pb.percent[:32]!r})'
        )
    return IntOrPercent(int(match.group(1)), percent=True)


def update_strategy_of(dep: deployment_pb2.Deployment) -> UpdateStrategy:
    if not dep.HasField("update_strategy"):
        return DEFAULTS
    s, path = dep.update_strategy, "deployment.update_strategy"
    return UpdateStrategy(
        max_unavailable=_int_or_percent(
            s.max_unavailable,
            s.HasField("max_unavailable"),
            DEFAULTS.max_unavailable,
            f"{path}.max_unavailable",
        ),
        max_surge=_int_or_percent(
            s.max_surge, s.HasField("max_surge"), DEFAULTS.max_surge, f"{path}.max_surge"
        ),
        min_ready_s=s.min_ready_seconds,
        progress_deadline_s=(
            s.progress_deadline_seconds
            if s.HasField("progress_deadline_seconds")
            else DEFAULTS.progress_deadline_s
        ),
        revision_history_limit=(
            s.revision_history_limit
            if s.HasField("revision_history_limit")
            else DEFAULTS.revision_history_limit
        ),
    )


def _seconds(d: duration_pb2.Duration, has: bool, default: float) -> float:
    return d.seconds + d.nanos / 1e9 if has else default


def health_check_of(dep: deployment_pb2.Deployment) -> HealthCheck | None:
    if not dep.HasField("health_check"):
        return None
    h, default = dep.health_check, HealthCheck()
    return HealthCheck(
        command=tuple(h.command),
        tcp_port=h.tcp_port,
        interval_s=_seconds(h.interval, h.HasField("interval"), default.interval_s),
        timeout_s=_seconds(h.timeout, h.HasField("timeout"), default.timeout_s),
        failure_threshold=h.failure_threshold or default.failure_threshold,
    )


def _ip(value: IntOrPercent) -> deployment_pb2.IntOrPercent:
    if value.percent:
        return deployment_pb2.IntOrPercent(percent=f"{value.value}%")
    return deployment_pb2.IntOrPercent(count=value.value)


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def health_check_pb(check: HealthCheck | None) -> deployment_pb2.HealthCheck | None:
    if check is None:
        return None
    return deployment_pb2.HealthCheck(
        command=list(check.command),
        tcp_port=check.tcp_port,
        interval=_duration(check.interval_s),
        timeout=_duration(check.timeout_s),
        failure_threshold=check.failure_threshold,
    )


def _rollout_pb(r: Rollout) -> deployment_pb2.Rollout:
    return deployment_pb2.Rollout(
        generation=r.generation,
        template_generation=r.template_generation,
        spec_hash=spec_hash(r.template),
        image=r.template.image,
        command=list(r.template.command),
        start_time=timestamp_pb(r.start_time),
        end_time=timestamp_pb(r.end_time),
        outcome=deployment_pb2.RolloutOutcome.Value(f"ROLLOUT_OUTCOME_{r.outcome.value}"),
        reason=r.reason,
        message=r.message,
    )


def fill_deployment(pb: deployment_pb2.Deployment, dep: Deployment) -> None:
    """Sets the rolling-update fields of `pb` from `dep`."""
    s = dep.update_strategy
    pb.update_strategy.CopyFrom(
        deployment_pb2.UpdateStrategy(
            max_unavailable=_ip(s.max_unavailable),
            max_surge=_ip(s.max_surge),
            min_ready_seconds=s.min_ready_s,
            progress_deadline_seconds=s.progress_deadline_s,
            revision_history_limit=s.revision_history_limit,
        )
    )
    check = health_check_pb(dep.health_check)
    if check is not None:
        pb.health_check.CopyFrom(check)
    pb.paused = dep.paused
    pb.generation = dep.generation
    pb.observed_generation = dep.observed_generation
    pb.template_generation = dep.template_generation
    pb.updated_replicas = dep.updated_replicas
    pb.ready_replicas = dep.ready_replicas
    pb.available_replicas = dep.available_replicas
    pb.rollout_history.extend(_rollout_pb(r) for r in dep.rollouts)


def health_pb(health: Health) -> deployment_pb2.ReplicaHealth.ValueType:
    return deployment_pb2.ReplicaHealth.Value(f"REPLICA_HEALTH_{health.value}")


def health_of(value: deployment_pb2.ReplicaHealth.ValueType) -> Health:
    name = deployment_pb2.ReplicaHealth.Name(value).removeprefix("REPLICA_HEALTH_")
    return Health(name)


def fill_replica(pb: deployment_pb2.Replica, r: Replica) -> None:
    pb.generation = r.generation
    pb.health = health_pb(r.health)
