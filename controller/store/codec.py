"""Models <-> JSON documents as the stores keep them. Credentials pass through the `Sealer` here
and only here. A document carries no id and no revision: those live in their own columns.

A node's last-heartbeat time has two homes: its document keeps the time the node's last
revision carried, and the `node_heartbeats` table the time `record_heartbeats` last recorded
(a small row, cheap to rewrite in bulk, where rewriting every document was not). A node read
from its table has the newer of the two (`heartbeat`)."""

from __future__ import annotations

import base64
import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson

from controller.models import (
    Capabilities,
    Credentials,
    Deployment,
    DeploymentStatus,
    DesiredState,
    Drain,
    DrainState,
    Health,
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
from controller.store.base import Change, ResourceKind
from controller.store.rollout_codec import (
    decode_health_check,
    decode_rollout,
    decode_strategy,
    encode_health_check,
    encode_rollout,
    encode_strategy,
)
from controller.store.sealing import Sealed, Sealer

K = TypeVar("K", Node, Deployment)
_STATUSES = {status.value: status for status in NodeStatus}


def _loads(document: str) -> Any:
    """A stored document, parsed with orjson (a start-up parses every one: 50,000 nodes took
    ~2x as long with json); json parses what orjson refuses but json.dumps writes (NaN, an
    integer past 64 bits)."""
    try:
        return orjson.loads(document)
    except orjson.JSONDecodeError:
        return json.loads(document)


@functools.lru_cache(maxsize=1024, typed=True)
def _capabilities(cpu: float, memory: float, disk: float, bandwidth: str) -> Capabilities:
    """Nodes of one shape share one (immutable) value: fewer objects, decoded faster."""
    return Capabilities(cpu, memory, disk, bandwidth)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _required_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def encode_node(node: Node, sealer: Sealer) -> str:
    creds: dict[str, Any] | None = None
    if node.credentials is not None:
        sealed = sealer.seal(node.credentials.oauth_token.reveal())
        creds = {
            "key_id": sealed.key_id,
            "token": base64.b64encode(sealed.blob).decode(),
            "provider": node.credentials.oauth_provider,
            "expires_at_ms": node.credentials.oauth_expires_at_ms,
        }
    caps = node.capabilities
    document = {
        "provider": node.provider,
        "endpoint": node.endpoint,
        "region": node.region,
        "capabilities": [caps.cpu_cores, caps.memory_gb, caps.disk_gb, caps.network_bandwidth],
        "labels": dict(node.labels),
        "credentials": creds,
        "status": node.status.value,
        "create_time": _time(node.create_time),
        "update_time": _time(node.update_time),
        "last_heartbeat_time": _time(node.last_heartbeat_time),
        "holder": node.holder,
        "unschedulable": node.unschedulable,
        "drain": _encode_drain(node.drain),
    }
    # orjson: ~0.5 us where json takes ~8.5, and every create and status change of a node
    # encodes it. The same values (it spells a float's exponent `1e-7`, not `1e-07`, and writes
    # text past ASCII as UTF-8, not escaped); json where they would differ: a NaN or infinite
    # number (orjson: null), an integer past 64 bits (orjson refuses it).
    if math.isfinite(caps.cpu_cores + caps.memory_gb + caps.disk_gb):
        try:
            return orjson.dumps(document).decode()
        except orjson.JSONEncodeError:
            pass
    return json.dumps(document, separators=(",", ":"))


def decode_node(
    node_id: str, revision: int, document: str, sealer: Sealer, heartbeat: str | None = None
) -> Node:
    """The node of `document`; `heartbeat`, its recorded heartbeat time, if newer than the
    document's (see the module docstring)."""
    d = _loads(document)
    creds = None
    if d["credentials"] is not None:
        c = d["credentials"]
        token = sealer.unseal(Sealed(c["key_id"], base64.b64decode(c["token"])))
        creds = Credentials(Secret(token), c["provider"], c["expires_at_ms"])
    cpu, memory, disk, bandwidth = d["capabilities"]
    return Node(
        id=node_id,
        provider=d["provider"],
        endpoint=d["endpoint"],
        region=d["region"],
        capabilities=_capabilities(cpu, memory, disk, bandwidth),
        labels=frozen_map(d["labels"]),
        credentials=creds,
        status=_STATUSES[d["status"]],
        create_time=_required_time(d["create_time"]),
        update_time=_required_time(d["update_time"]),
        last_heartbeat_time=_parse_time(_newest(d["last_heartbeat_time"], heartbeat)),
        revision=revision,
        holder=d.get("holder", ""),
        unschedulable=d.get("unschedulable", False),
        drain=_decode_drain(d.get("drain")),
    )


def _newest(stored: str | None, recorded: str | None) -> str | None:
    """The later of two ISO 8601 times (`datetime.isoformat()`), either may be None. With the
    same UTC offset, as one clock writes them, the text orders as the times do ("...:05+00:00"
    before "...:05.000001+00:00" too), so a start-up compares 50,000 pairs without parsing."""
    if recorded is None or stored is None:
        return stored if recorded is None else recorded
    if stored[-6:] == recorded[-6:] and stored[-6] in "+-":
        return recorded if recorded > stored else stored
    return recorded if datetime.fromisoformat(recorded) > datetime.fromisoformat(stored) else stored


def with_heartbeat(document: str, recorded: str | None) -> str:
    """A node's `document` with the recorded heartbeat time in it, if newer than its own: the
    node as reads return it (what a delete logs as the node's last state)."""
    if recorded is None:
        return document
    d = _loads(document)
    if _newest(d["last_heartbeat_time"], recorded) != recorded:
        return document
    d["last_heartbeat_time"] = recorded
    return json.dumps(d, separators=(",", ":"))


def _encode_drain(drain: Drain | None) -> list[Any] | None:
    if drain is None:
        return None
    times = [_time(drain.start_time), _time(drain.deadline), _time(drain.end_time)]
    counts = [drain.remaining, drain.moved, drain.stopped]
    return [drain.state.value, *times, *counts, drain.message]


def _decode_drain(d: list[Any] | None) -> Drain | None:
    if d is None:
        return None
    state, start, deadline, end, remaining, moved, stopped, message = d
    return Drain(
        start_time=_required_time(start),
        deadline=_required_time(deadline),
        state=DrainState(state),
        end_time=_parse_time(end),
        remaining=remaining,
        moved=moved,
        stopped=stopped,
        message=message,
    )


def encode_deployment(dep: Deployment) -> str:
    res, con = dep.resources, dep.constraints
    return json.dumps(
        {
            "name": dep.name,
            "image": dep.image,
            "command": list(dep.command),
            "args": list(dep.args),
            "env": dict(dep.env),
            "resources": [res.cpu_cores, res.memory_gb, res.disk_gb],
            "replicas": dep.replicas,
            "constraints": {"provider": con.provider, "region": con.region, "labels": con.labels},
            "strategy": dep.strategy.value,
            "status": dep.status.value,
            "status_reason": dep.status_reason,
            "status_reason_code": dep.status_reason_code,
            "replica_set": [_encode_replica(r) for r in dep.replica_set],
            "history": [[h.status.value, h.reason, _time(h.time)] for h in dep.history],
            "generation": dep.generation,
            "observed_generation": dep.observed_generation,
            "template_generation": dep.template_generation,
            "update_strategy": encode_strategy(dep.update_strategy),
            "health_check": encode_health_check(dep.health_check),
            "paused": dep.paused,
            "rollouts": [encode_rollout(r) for r in dep.rollouts],
            "counts": [dep.updated_replicas, dep.ready_replicas, dep.available_replicas],
            "create_time": _time(dep.create_time),
            "update_time": _time(dep.update_time),
        },
        separators=(",", ":"),
        default=dict,  # the constraint labels mapping
    )


def decode_deployment(dep_id: str, revision: int, document: str) -> Deployment:
    d = _loads(document)
    con = d["constraints"]
    return Deployment(
        id=dep_id,
        name=d["name"],
        image=d["image"],
        command=tuple(d["command"]),
        args=tuple(d["args"]),
        env=frozen_map(d["env"]),
        resources=Resources(*d["resources"]),
        replicas=d["replicas"],
        constraints=PlacementConstraints(con["provider"], con["region"], frozen_map(con["labels"])),
        strategy=PlacementStrategy(d["strategy"]),
        status=DeploymentStatus(d["status"]),
        status_reason=d["status_reason"],
        status_reason_code=d.get("status_reason_code", ""),
        # A placement stored before placements recorded their template runs the current one.
        replica_set=tuple(
            _decode_replica(r, d.get("template_generation", d.get("spec_version", 1)))
            for r in d["replica_set"]
        ),
        history=tuple(
            StatusChange(DeploymentStatus(s), reason, _required_time(t))
            for s, reason, t in d["history"]
        ),
        # Documents from before generations had a spec version that counted template changes.
        generation=d.get("generation", d.get("spec_version", 1)),
        observed_generation=d.get("observed_generation", 0),
        template_generation=d.get("template_generation", d.get("spec_version", 1)),
        update_strategy=decode_strategy(d.get("update_strategy")),
        health_check=decode_health_check(d.get("health_check")),
        paused=d.get("paused", False),
        rollouts=tuple(decode_rollout(r) for r in d.get("rollouts", ())),
        updated_replicas=d.get("counts", (0, 0, 0))[0],
        ready_replicas=d.get("counts", (0, 0, 0))[1],
        available_replicas=d.get("counts", (0, 0, 0))[2],
        create_time=_required_time(d["create_time"]),
        update_time=_required_time(d["update_time"]),
        revision=revision,
    )


def _encode_replica(r: Replica) -> dict[str, Any]:
    return {
        "index": r.index,
        "node_id": r.node_id,
        "state": r.state.value,
        "desired": r.desired.value,
        "message": r.message,
        "failures": r.failures,
        "retry_at": _time(r.retry_at),
        "avoid": list(r.avoid),
        "superseded": r.superseded,
        "state_time": _time(r.state_time),
        "placement_id": r.placement_id,
        "generation": r.generation,
        "health": r.health.value,
        "ready_time": _time(r.ready_time),
        "handover": r.handover,
        "prefer": r.prefer,
        **({"unschedulable": True} if r.unschedulable else {}),
    }


def _decode_replica(d: dict[str, Any], template_generation: int) -> Replica:
    return Replica(
        index=d["index"],
        node_id=d["node_id"],
        state=ReplicaState(d["state"]),
        desired=DesiredState(d["desired"]),
        message=d["message"],
        failures=d["failures"],
        retry_at=_parse_time(d["retry_at"]),
        avoid=tuple(d["avoid"]),
        superseded=d["superseded"],
        state_time=_parse_time(d["state_time"]),
        placement_id=d.get("placement_id", ""),
        generation=d.get("generation", template_generation if d["node_id"] else 0),
        health=Health(d.get("health", "UNSPECIFIED")),
        ready_time=_parse_time(d.get("ready_time")),
        handover=d.get("handover", False),
        prefer=d.get("prefer", ""),
        unschedulable=d.get("unschedulable", False),
    )


@dataclass(frozen=True)
class Layout(Generic[K]):
    """How one kind maps to its table in every store: indexed columns beside the document.
    `columns(resource)` has the keys `column_names`, in that order (a batch binds one prepared
    statement). `decode(id, revision, document, heartbeat)`: `heartbeat` is the recorded
    heartbeat time (nodes, when `heartbeats`; else None)."""

    kind: ResourceKind
    table: str
    column_names: tuple[str, ...]
    columns: Callable[[K], dict[str, str]]
    encode: Callable[[K], str]
    decode: Callable[[str, int, str, str | None], K]
    heartbeats: bool = False  # rows of `node_heartbeats` belong to this kind's rows

    @property
    def row_names(self) -> tuple[str, ...]:
        """The columns of a row as an insert names them, in `row`'s order."""
        return ("id", "revision", *self.column_names, "data")

    def row(self, resource: K, revision: int, document: str) -> tuple[object, ...]:
        """The parameters of an insert of `row_names` for `resource`, stored as `document`."""
        return (resource.id, revision, *self.columns(resource).values(), document)


def node_layout(sealer: Sealer) -> Layout[Node]:
    return Layout(
        kind="node",
        table="nodes",
        column_names=("status", "provider", "region"),
        columns=lambda n: {"status": n.status.value, "provider": n.provider, "region": n.region},
        encode=lambda n: encode_node(n, sealer),
        decode=lambda i, r, d, h: decode_node(i, r, d, sealer, h),
        heartbeats=True,
    )


DEPLOYMENT_LAYOUT: Layout[Deployment] = Layout(
    kind="deployment",
    table="deployments",
    column_names=("status", "name"),
    columns=lambda d: {"status": d.status.value, "name": d.name},
    encode=encode_deployment,
    decode=lambda i, r, d, _: decode_deployment(i, r, d),
)


def change(
    layouts: Mapping[str, Layout[Node] | Layout[Deployment]],
    revision: int,
    kind: ResourceKind,
    resource_id: str,
    deleted: object,
    document: str | None,
    prior_revision: int | None,
) -> Change:
    """A change-log row as a `Change`, its document decoded with the kind's layout."""
    resource: Node | Deployment | None = None
    if document is not None:
        at = int(prior_revision) if deleted and prior_revision is not None else int(revision)
        resource = layouts[kind].decode(resource_id, at, document, None)
    return Change(int(revision), kind, resource_id, bool(deleted), resource)
