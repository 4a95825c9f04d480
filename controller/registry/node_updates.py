"""The rules of UpdateNode, as a pure function: which fields a client may change (labels, the
cordon, the drain), what a drain request does, and the errors of a bad one.

Cordon and drain follow Kubernetes (`spec.unschedulable`, `kubectl cordon/drain/uncordon`) and
Nomad (`node drain -enable/-disable -deadline`):
- a drain cordons the node; it stays cordoned when the drain completes or is cancelled, until
  the operator makes it schedulable again (Kubernetes; Nomad's `-keep-ineligible`);
- making a draining node schedulable is refused (Nomad refuses eligibility while draining):
  cancel the drain in the same request;
- sending a drain again while one runs sets a new deadline from now (Nomad), keeping its counts;
- a completed drain stays visible until the node is made schedulable again.
The leader moves the replicas and reports progress (scheduler/drainer.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from controller.errors import FailedPreconditionError, InvalidArgumentError
from controller.models import Drain, DrainState, Node, NodeSpec, frozen_map
from controller.registry.validation import validate_mask, validate_node

DEFAULT_DRAIN_TIMEOUT_S = 3600.0  # Nomad's default drain deadline
MAX_DRAIN_TIMEOUT_S = 30 * 24 * 3600.0
UPDATABLE = frozenset({"labels", "unschedulable", "drain"})


@dataclass(frozen=True)
class DrainRequest:
    """A drain a client asks for; `timeout_s` None means the default."""

    timeout_s: float | None = None


@dataclass(frozen=True)
class NodeChanges:
    """The new values a client sends with an update mask (only the masked ones are used)."""

    labels: Mapping[str, str] = field(default_factory=frozen_map)
    unschedulable: bool = False
    drain: DrainRequest | None = None  # None: no drain (cancels one)


def apply_update(node: Node, changes: NodeChanges, paths: Sequence[str], now: datetime) -> Node:
    """The node after the update, or an InvalidArgumentError / FailedPreconditionError."""
    validate_mask(paths, UPDATABLE)
    updated = node
    if "labels" in paths:
        spec = NodeSpec(node.provider, node.endpoint, node.region, node.capabilities)
        validate_node(replace(spec, labels=changes.labels))
        updated = replace(updated, labels=frozen_map(changes.labels))
    if "drain" in paths:
        updated = _drain(updated, changes.drain, now)
    if "unschedulable" in paths:
        updated = _cordon(updated, changes.unschedulable)
    if updated == node:
        return node  # nothing changed: no write, no new etag
    return replace(updated, update_time=now)


def _drain(node: Node, request: DrainRequest | None, now: datetime) -> Node:
    if request is None:  # cancel: the node stays cordoned
        running = node.drain is not None and node.drain.state is DrainState.DRAINING
        return replace(node, drain=None) if running else node
    timeout_s = DEFAULT_DRAIN_TIMEOUT_S if request.timeout_s is None else request.timeout_s
    if not 0 <= timeout_s <= MAX_DRAIN_TIMEOUT_S:
        raise InvalidArgumentError.single(
            "node.drain.timeout", f"must be between 0 and {MAX_DRAIN_TIMEOUT_S:g} seconds"
        )
    deadline = now + timedelta(seconds=timeout_s)
    current = node.drain
    if current is not None and current.state is DrainState.DRAINING:
        drain = replace(current, deadline=deadline)
    else:
        drain = Drain(start_time=now, deadline=deadline, message="starting")
    return replace(node, unschedulable=True, drain=drain)


def _cordon(node: Node, unschedulable: bool) -> Node:
    if unschedulable:
        return replace(node, unschedulable=True)
    if node.drain is not None and node.drain.state is DrainState.DRAINING:
        raise FailedPreconditionError(
            f"node {node.id!r} is draining: cancel its drain (update_mask `drain`, drain unset)"
            " to make it schedulable",
            reason="NODE_DRAINING",
            metadata={"node_id": node.id},
        )
    return replace(node, unschedulable=False, drain=None)


def draining(node: Node) -> bool:
    return node.drain is not None and node.drain.state is DrainState.DRAINING
