"""UpdateNode's request and a node's drain, protobuf <-> domain (the rest of a node is in
convert.py)."""

from __future__ import annotations

from automator67.v1 import node_pb2, node_service_pb2
from google.protobuf import duration_pb2

from controller.api.timestamps import timestamp_pb
from controller.errors import InvalidArgumentError
from controller.models import Drain, frozen_map
from controller.registry.node_updates import DrainRequest, NodeChanges


def node_update(
    pb: node_service_pb2.UpdateNodeRequest,
) -> tuple[str, NodeChanges, list[str], str]:
    """(id, new values, update mask paths, etag) of an UpdateNode request."""
    if not pb.HasField("node"):
        raise InvalidArgumentError.single("node", "is required")
    node = pb.node
    drain = None
    if node.HasField("drain"):
        timeout = node.drain.timeout if node.drain.HasField("timeout") else None
        drain = DrainRequest(_seconds(timeout) if timeout is not None else None)
    changes = NodeChanges(frozen_map(node.labels), node.unschedulable, drain)
    return node.id, changes, list(pb.update_mask.paths), node.etag


def _seconds(duration: duration_pb2.Duration) -> float:
    if (duration.seconds < 0 < duration.nanos) or (duration.nanos < 0 < duration.seconds):
        raise InvalidArgumentError.single("node.drain.timeout", "is not a valid duration")
    return float(duration.seconds) + duration.nanos / 1e9


def drain_to_pb(drain: Drain | None) -> node_pb2.NodeDrain | None:
    if drain is None:
        return None
    return node_pb2.NodeDrain(
        state=node_pb2.DrainState.Value(f"DRAIN_STATE_{drain.state.value}"),
        start_time=timestamp_pb(drain.start_time),
        deadline=timestamp_pb(drain.deadline),
        end_time=timestamp_pb(drain.end_time),
        replicas_remaining=drain.remaining,
        replicas_moved=drain.moved,
        replicas_stopped=drain.stopped,
        message=drain.message,
    )
