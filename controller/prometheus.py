"""Prometheus metrics: every metric the controller exports, on one dedicated registry, and the
HTTP server that exposes them (README "Metrics"). Imported only when the metrics port is set
(`controller.metrics.enable()`): prometheus_client costs tens of ms of start-up.

Counters and histograms are updated where things happen (the request interceptor, the heartbeat
stream), through `controller/metrics.py`, or, for the domain, from its events
(`NodeRegistry.on_transition`, `Scheduler.on_pass`), which `server.py` wires there: the registry
and the scheduler import no metrics. Fleet state (nodes by status, deployments by status) is not
kept in gauges updated on every change: `StateCollector` computes it from the registries'
`stats()` when Prometheus scrapes, on the event loop that owns them.

The heartbeat path is hot: a beat costs one `inc()` of a plain int (`LoopCounter`). RPC label
children are looked up once per method and cached."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.process_collector import ProcessCollector

from controller.admission import AdmissionState
from controller.config import ConfigError
from controller.models import DeploymentStatus, NodeStatus
from controller.registry.deployments import DeploymentStats
from controller.registry.node_tally import NodeStats

log = logging.getLogger("controller.metrics")

PREFIX = "automator67"
# The controller's own registry: only its metrics (and the process's), never a library's.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes...

# Requests (controller/api/interceptors.py)
RPCS = Counter(
    f"{PREFIX}_rpcs",
    "RPCs finished, by full method name and status code",
    ["method", "code"],
    registry=REGISTRY,
)
RPC_DURATION = Histogram(
    f"{PREFIX}_rpc_duration_seconds",
    "Time to answer a unary RPC (streams are counted in automator67_rpcs_total only)",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)


class LoopCounter:
    """A counter that only the event loop's thread increments, for the hot path: a plain int, so
    an `inc()` costs tens of nanoseconds instead of prometheus_client's locked counter (about a
    0.6 us here). Scrapes read it from their own threads; reading an int is atomic."""

    __slots__ = ("_help", "_name", "value")

    def __init__(self, name: str, help: str, registry: CollectorRegistry) -> None:
        self._name, self._help = name, help
        self.value = 0
        registry.register(self)

    def inc(self) -> None:
        self.value += 1

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(self._name, self._help, value=self.value)


# Heartbeat streams (controller/api/heartbeat_stream.py)
HEARTBEATS = LoopCounter(
    f"{PREFIX}_heartbeats_received",
    "Beats accepted on heartbeat streams (valid and within the rate limit)",
    REGISTRY,
)
HEARTBEAT_STREAMS_OPEN = Gauge(
    f"{PREFIX}_heartbeat_streams_open",
    "Heartbeat streams open now (past hello)",
    registry=REGISTRY,
)
HEARTBEAT_STREAM_ENDS = Counter(
    f"{PREFIX}_heartbeat_stream_ends",
    "Heartbeat streams ended, by reason: agent_closed, broken, error, replaced, reconnect",
    ["reason"],
    registry=REGISTRY,
)
STREAM_END_REASONS = ("agent_closed", "broken", "error", "replaced", "reconnect")

# Liveness (controller/registry/nodes.py)
NODE_TRANSITIONS = Counter(
    f"{PREFIX}_node_status_transitions",
    "Node status changes, by old and new status",
    ["from", "to"],
    registry=REGISTRY,
)

# Scheduling (controller/scheduler/loop.py)
SCHEDULER_PASS_DURATION = Histogram(
    f"{PREFIX}_scheduler_pass_duration_seconds",
    "Time of one scheduling pass over every deployment, persistence included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
SCHEDULER_PLACEMENTS = Counter(
    f"{PREFIX}_scheduler_placements",
    "Replicas the scheduler assigned to a node (first placements and replacements)",
    registry=REGISTRY,
)

LEADER = Gauge(
    f"{PREFIX}_leader",
    "1 while this replica leads (holds the leader lease), else 0",
    registry=REGISTRY,
)
LEADER_CHANGES = Counter(
    f"{PREFIX}_leader_changes",
    "Times this replica started or stopped leading",
    registry=REGISTRY,
)


def leadership_changed(leading: bool, epoch: int) -> None:
    """This replica started or stopped leading (`Leadership.on_change`)."""
    LEADER.set(1 if leading else 0)
    LEADER_CHANGES.inc()


for _reason in STREAM_END_REASONS:  # every reason is exported from the start, at 0
    HEARTBEAT_STREAM_ENDS.labels(_reason)


class RpcMetrics:
    """The label children of one method, bound once: a finished OK call costs one `inc()` (and
    one `observe()` when unary), without label lookups."""

    __slots__ = ("_method", "duration", "ok")

    def __init__(self, method: str) -> None:
        self._method = method
        self.ok = RPCS.labels(method, "OK")
        self.duration = RPC_DURATION.labels(method)

    def done(self, code: str, elapsed_s: float, *, unary: bool) -> None:
        if code == "OK":
            self.ok.inc()
        else:
            RPCS.labels(self._method, code).inc()
        if unary:
            self.duration.observe(elapsed_s)


_rpc_metrics: dict[str, RpcMetrics] = {}


def rpc_metrics(method: str) -> RpcMetrics:
    """The cached children of `method` (only registered methods reach here, so the set is
    bounded by the API)."""
    found = _rpc_metrics.get(method)
    if found is None:
        found = _rpc_metrics[method] = RpcMetrics(method)
    return found


_transitions: dict[tuple[str, str], Any] = {}


def node_transition(old: NodeStatus, new: NodeStatus) -> None:
    """A node's status changed (`NodeRegistry.on_transition`)."""
    child = _transitions.get((old.value, new.value))
    if child is None:
        child = _transitions[(old.value, new.value)] = NODE_TRANSITIONS.labels(old.value, new.value)
    child.inc()


def scheduler_pass(placements: int, seconds: float) -> None:
    """A scheduling pass ended (`Scheduler.on_pass`)."""
    if placements:
        SCHEDULER_PLACEMENTS.inc(placements)
    SCHEDULER_PASS_DURATION.observe(seconds)


@dataclass(frozen=True)
class StateSource:
    """Where the scrape-time state comes from: the registries' `stats()`."""

    nodes: Callable[[], NodeStats]
    deployments: Callable[[], DeploymentStats]
    # Registrations and stream opens waiting for admission (controller/admission.py).
    admission: Callable[[], AdmissionState] | None = None


class StateCollector:
    """Fleet state computed at scrape time. With `loop`, `stats()` runs on that event loop (the
    registries are not thread-safe, and scrapes arrive on the HTTP server's threads); a scrape
    that cannot get an answer within `timeout_s` omits these metrics."""

    def __init__(
        self,
        source: StateSource,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._source = source
        self._loop = loop
        self._timeout_s = timeout_s

    def collect(self) -> Iterable[Metric]:
        try:
            nodes, deployments = self._stats()
        except Exception:  # never fail the whole scrape: the other metrics still count
            log.warning("fleet metrics unavailable for this scrape", exc_info=True)
            return
        by_node = GaugeMetricFamily(
            f"{PREFIX}_nodes", "Registered nodes, by status", labels=["status"]
        )
        for status in NodeStatus:
            by_node.add_metric([status.value], nodes.by_status.get(status.value, 0))
        yield by_node
        yield GaugeMetricFamily(
            f"{PREFIX}_self_suspected",
            "1 while the controller suspects itself (too many nodes SUSPECT) and marks none "
            "OFFLINE",
            value=1 if nodes.self_suspected else 0,
        )
        by_deployment = GaugeMetricFamily(
            f"{PREFIX}_deployments", "Deployments, by status", labels=["status"]
        )
        for dep_status in DeploymentStatus:
            by_deployment.add_metric(
                [dep_status.value], deployments.by_status.get(dep_status.value, 0)
            )
        yield by_deployment
        yield GaugeMetricFamily(
            f"{PREFIX}_replicas_requested",
            "Replicas the deployments ask for, in total",
            value=deployments.replicas_requested,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_replicas_placed",
            "Replicas placed on a node, in total",
            value=deployments.replicas_placed,
        )
        if self._source.admission is not None:
            yield from _admission_metrics(self._source.admission())

    def _stats(self) -> tuple[NodeStats, DeploymentStats]:
        def read() -> tuple[NodeStats, DeploymentStats]:
            return self._source.nodes(), self._source.deployments()

        loop = self._loop
        if loop is None or _running_in(loop):
            return read()
        answer: concurrent.futures.Future[tuple[NodeStats, DeploymentStats]]
        answer = concurrent.futures.Future()

        def on_loop() -> None:
            if answer.set_running_or_notify_cancel():
                try:
                    answer.set_result(read())
                except Exception as exc:
                    answer.set_exception(exc)

        loop.call_soon_threadsafe(on_loop)  # RuntimeError once the loop is closed
        try:
            return answer.result(self._timeout_s)
        finally:
            answer.cancel()


def _admission_metrics(state: AdmissionState) -> Iterable[Metric]:
    """Plain ints, read from the scrape's thread as they are."""
    yield GaugeMetricFamily(
        f"{PREFIX}_admission_inflight",
        "Registrations and heartbeat stream opens being handled now (at most the bound)",
        value=state.inflight,
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_admission_queued",
        "Registrations and heartbeat stream opens waiting for admission now",
        value=state.queued,
    )
    yield CounterMetricFamily(
        f"{PREFIX}_admission_admitted",
        "Registrations and heartbeat stream opens admitted",
        value=state.admitted,
    )
    yield CounterMetricFamily(
        f"{PREFIX}_admission_rejected",
        "Registrations and heartbeat stream opens refused (RESOURCE_EXHAUSTED): the queue was full",
        value=state.rejected,
    )


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class Exporter:
    """The HTTP server of /metrics, on its own daemon threads."""

    def __init__(self, host: str, port: int, source: StateSource) -> None:
        self._host, self._port, self._source = host, port, source
        self._collector: StateCollector | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        """Binds and serves; call on the event loop that owns the registries. Raises
        ConfigError when the port cannot be bound."""
        self._collector = StateCollector(self._source, asyncio.get_running_loop())
        REGISTRY.register(self._collector)
        try:
            self._server, self._thread = start_http_server(
                self._port, addr=self._host, registry=REGISTRY
            )
        except BaseException as exc:
            REGISTRY.unregister(self._collector)
            self._collector = None
            if isinstance(exc, OSError):
                raise ConfigError(
                    f"A67_METRICS_PORT {self._port} on {self._host} cannot be used: {exc}"
                ) from None
            raise
        self.port = int(self._server.server_address[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)  # waits for serve_forever's poll
            server.server_close()
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None
