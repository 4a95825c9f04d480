"""What the server's code counts, and whether it is counted: the metrics the controller exports
are defined in `controller/prometheus.py`, which is imported only when the metrics port is set
(`enable()`, called by the server): prometheus_client and the HTTP server it brings cost tens
of ms of start-up and a few MB, for counters that nobody could read.

Until `enable()`, every instrument here is `OFF`, whose updates do nothing; after it, each name
is the Prometheus instrument of the same name. Callers read them through the module at the time
of the update (`metrics.HEARTBEATS.inc()`), never `from controller.metrics import HEARTBEATS`,
so that what they update is what `enable()` set."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Protocol

import grpc

if TYPE_CHECKING:
    from controller.models import NodeStatus


class Counting(Protocol):
    def inc(self) -> None: ...


class Gauging(Protocol):
    def inc(self) -> None: ...

    def dec(self) -> None: ...


class Labelled(Protocol):
    def labels(self, *values: str) -> Counting: ...


class RpcMetrics(Protocol):
    """The instruments of one RPC method (see `prometheus.RpcMetrics`)."""

    def done(self, code: str, elapsed_s: float, *, unary: bool) -> None: ...


class Off:
    """Every instrument while metrics are off: updates cost a call and do nothing."""

    __slots__ = ()

    def inc(self) -> None:
        return None

    def dec(self) -> None:
        return None

    def labels(self, *values: str) -> Off:
        return self

    def done(self, code: str, elapsed_s: float, *, unary: bool) -> None:
        return None


OFF = Off()

# Heartbeat streams (controller/api/heartbeat_stream.py)
HEARTBEATS: Counting = OFF
HEARTBEAT_STREAMS_OPEN: Gauging = OFF
HEARTBEAT_STREAM_ENDS: Labelled = OFF

_exporting: ModuleType | None = None  # controller.prometheus, once enabled


def enable() -> None:
    """Counts from now on, in `controller.prometheus`'s registry (idempotent). Call it before
    serving: what was done before it is not counted."""
    global _exporting, HEARTBEATS, HEARTBEAT_STREAMS_OPEN, HEARTBEAT_STREAM_ENDS
    if _exporting is not None:
        return
    from controller import prometheus

    HEARTBEATS = prometheus.HEARTBEATS
    HEARTBEAT_STREAMS_OPEN = prometheus.HEARTBEAT_STREAMS_OPEN
    HEARTBEAT_STREAM_ENDS = prometheus.HEARTBEAT_STREAM_ENDS
    _exporting = prometheus


def enabled() -> bool:
    return _exporting is not None


def rpc_metrics(method: str) -> RpcMetrics:
    """The instruments of `method`, bound once per method (controller/api/interceptors.py)."""
    if _exporting is None:
        return OFF
    found: RpcMetrics = _exporting.rpc_metrics(method)
    return found


def leadership_changed(leading: bool, epoch: int) -> None:
    """This replica started or stopped leading (`Leadership.on_change`)."""
    if _exporting is not None:
        _exporting.leadership_changed(leading, epoch)


def node_transition(old: NodeStatus, new: NodeStatus) -> None:
    """A node's status changed (`NodeRegistry.on_transition`)."""
    if _exporting is not None:
        _exporting.node_transition(old, new)


def scheduler_pass(placements: int, seconds: float) -> None:
    """A scheduling pass ended (`Scheduler.on_pass`)."""
    if _exporting is not None:
        _exporting.scheduler_pass(placements, seconds)


def code_name(code: object) -> str:
    """A status code's name ("NOT_FOUND") from a grpc.StatusCode or its integer value."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    for candidate in grpc.StatusCode:
        if candidate.value[0] == code:
            return candidate.name
    return "UNKNOWN"
