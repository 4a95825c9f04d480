"""JSON shapes of a deployment's rolling-update state (issue 14): its update strategy, health
check, templates and rollout history. Documents written before these existed decode to the
defaults, so a stored deployment needs no migration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.models import (
    HealthCheck,
    IntOrPercent,
    Resources,
    Rollout,
    RolloutOutcome,
    Template,
    UpdateStrategy,
    frozen_map,
)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def encode_health_check(check: HealthCheck | None) -> list[Any] | None:
    if check is None:
        return None
    return [
        list(check.command),
        check.tcp_port,
        check.interval_s,
        check.timeout_s,
        check.failure_threshold,
    ]


def decode_health_check(d: list[Any] | None) -> HealthCheck | None:
    if d is None:
        return None
    command, port, interval, timeout, threshold = d
    return HealthCheck(tuple(command), port, interval, timeout, threshold)


def encode_strategy(s: UpdateStrategy) -> list[Any]:
    return [
        [s.max_unavailable.value, s.max_unavailable.percent],
        [s.max_surge.value, s.max_surge.percent],
        s.min_ready_s,
        s.progress_deadline_s,
        s.revision_history_limit,
    ]


def decode_strategy(d: list[Any] | None) -> UpdateStrategy:
    if d is None:
        return UpdateStrategy()
    unavailable, surge, min_ready, deadline, limit = d
    return UpdateStrategy(
        IntOrPercent(*unavailable), IntOrPercent(*surge), min_ready, deadline, limit
    )


def encode_template(t: Template) -> dict[str, Any]:
    res = t.resources
    return {
        "image": t.image,
        "command": list(t.command),
        "args": list(t.args),
        "env": dict(t.env),
        "resources": [res.cpu_cores, res.memory_gb, res.disk_gb],
        "health_check": encode_health_check(t.health_check),
    }


def decode_template(d: dict[str, Any]) -> Template:
    return Template(
        image=d["image"],
        command=tuple(d["command"]),
        args=tuple(d["args"]),
        env=frozen_map(d["env"]),
        resources=Resources(*d["resources"]),
        health_check=decode_health_check(d["health_check"]),
    )


def encode_rollout(r: Rollout) -> dict[str, Any]:
    return {
        "generation": r.generation,
        "template_generation": r.template_generation,
        "template": encode_template(r.template),
        "start_time": _time(r.start_time),
        "end_time": _time(r.end_time),
        "outcome": r.outcome.value,
        "reason": r.reason,
        "message": r.message,
        "progress_time": _time(r.progress_time),
        "progress_mark": r.progress_mark,
    }


def decode_rollout(d: dict[str, Any]) -> Rollout:
    start = _parse_time(d["start_time"])
    assert start is not None
    return Rollout(
        generation=d["generation"],
        template_generation=d["template_generation"],
        template=decode_template(d["template"]),
        start_time=start,
        end_time=_parse_time(d["end_time"]),
        outcome=RolloutOutcome(d["outcome"]),
        reason=d["reason"],
        message=d["message"],
        progress_time=_parse_time(d["progress_time"]),
        progress_mark=d["progress_mark"],
    )
