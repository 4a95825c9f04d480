"""The Prometheus metrics: fleet state computed at scrape time from real registries (on their
event loop when scraped from another thread), the cached RPC children, the transitions counter,
the exporter over HTTP, and the metrics port setting."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from controller import metrics, prometheus
from controller.clock import FakeClock
from controller.config import ConfigError, parse_config
from controller.models import Capabilities, NodeSpec, Replica
from controller.registry.deployments import DeploymentRegistry, DeploymentStats
from controller.registry.node_tally import NodeStats
from controller.registry.nodes import NodeRegistry
from controller.scheduler.loop import _placements
from controller.store.base import Store

metrics.enable()  # what a controller with a metrics port does: count, in prometheus.py

SPEC = NodeSpec(
    provider="render",
    endpoint="https://api.render.com",
    region="us-east-1",
    capabilities=Capabilities(cpu_cores=4.0, memory_gb=8.0, disk_gb=50.0),
)


async def registries(store: Store, clock: FakeClock) -> tuple[NodeRegistry, DeploymentRegistry]:
    nodes = NodeRegistry(store, clock)
    await nodes.load()
    deployments = DeploymentRegistry(store, clock)
    await deployments.load()
    return nodes, deployments


def scraped(
    nodes: NodeRegistry,
    deployments: DeploymentRegistry,
    loop: asyncio.AbstractEventLoop | None = None,
) -> tuple[CollectorRegistry, Callable[[str, dict[str, str] | None], float | None]]:
    registry = CollectorRegistry()
    source = prometheus.StateSource(nodes.stats, deployments.stats)
    registry.register(prometheus.StateCollector(source, loop))

    def value(name: str, labels: dict[str, str] | None = None) -> float | None:
        return registry.get_sample_value(name, labels or {})

    return registry, value


def global_value(name: str, labels: dict[str, str] | None = None) -> float:
    return prometheus.REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_nodes_by_status_are_computed_from_the_registry_at_scrape_time(
    store: Store, clock: FakeClock
) -> None:
    nodes, deployments = await registries(store, clock)
    first = await nodes.register(SPEC)
    await nodes.register(SPEC)
    _, value = scraped(nodes, deployments)

    assert value("automator67_nodes", {"status": "PENDING"}) == 2
    assert value("automator67_nodes", {"status": "READY"}) == 0
    assert value("automator67_nodes", {"status": "SUSPECT"}) == 0
    assert value("automator67_nodes", {"status": "OFFLINE"}) == 0
    assert value("automator67_self_suspected", None) == 0

    nodes.stream_opened(first.id)  # no gauge was touched: the next scrape sees it anyway
    assert value("automator67_nodes", {"status": "READY"}) == 1
    assert value("automator67_nodes", {"status": "PENDING"}) == 1

    nodes.stream_closed(first.id, "test")
    assert value("automator67_nodes", {"status": "READY"}) == 0
    assert value("automator67_nodes", {"status": "SUSPECT"}) == 1


async def test_deployments_and_replicas_are_exported_with_every_status(
    store: Store, clock: FakeClock
) -> None:
    nodes, deployments = await registries(store, clock)
    _, value = scraped(nodes, deployments)

    for status in ("PENDING", "SCHEDULED", "RUNNING", "FAILED", "STOPPING", "STOPPED"):
        assert value("automator67_deployments", {"status": status}) == 0
    assert value("automator67_replicas_requested", None) == 0
    assert value("automator67_replicas_placed", None) == 0


async def test_a_scrape_from_another_thread_reads_the_registries_on_their_loop(
    store: Store, clock: FakeClock
) -> None:
    nodes, deployments = await registries(store, clock)
    node = await nodes.register(SPEC)
    nodes.stream_opened(node.id)
    threads: list[bool] = []
    real_stats = nodes.stats

    def stats() -> NodeStats:
        threads.append(_on_loop())
        return real_stats()

    registry = CollectorRegistry()
    source = prometheus.StateSource(stats, deployments.stats)
    registry.register(prometheus.StateCollector(source, asyncio.get_running_loop()))
    threads.clear()  # registering describes the collector, on this loop

    ready = await asyncio.to_thread(
        registry.get_sample_value, "automator67_nodes", {"status": "READY"}
    )

    assert ready == 1
    assert threads == [True]


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_a_failing_source_omits_the_fleet_metrics_but_not_the_scrape() -> None:
    def broken() -> NodeStats:
        raise RuntimeError("boom")

    registry = CollectorRegistry()
    registry.register(prometheus.StateCollector(prometheus.StateSource(broken, DeploymentStats)))
    registry.register(_OneCounter())

    assert registry.get_sample_value("automator67_nodes", {"status": "READY"}) is None
    assert registry.get_sample_value("other_total") == 1


class _OneCounter:
    def collect(self) -> list[Metric]:
        return [CounterMetricFamily("other", "a counter", value=1)]


async def test_status_transitions_are_counted_by_from_and_to(
    store: Store, clock: FakeClock
) -> None:
    nodes, _ = await registries(store, clock)
    nodes.on_transition.append(metrics.node_transition)  # as server.py wires it
    node = await nodes.register(SPEC)
    ready = {"from": "PENDING", "to": "READY"}
    suspect = {"from": "READY", "to": "SUSPECT"}
    before = (
        global_value("automator67_node_status_transitions_total", ready),
        global_value("automator67_node_status_transitions_total", suspect),
    )

    nodes.stream_opened(node.id)
    nodes.beat(node.id)  # no transition
    nodes.stream_closed(node.id, "test")

    after = (
        global_value("automator67_node_status_transitions_total", ready),
        global_value("automator67_node_status_transitions_total", suspect),
    )
    assert after == (before[0] + 1, before[1] + 1)


def test_rpc_children_are_bound_once_per_method() -> None:
    method = "/test.Service/Cached"
    counted = metrics.rpc_metrics(method)
    assert metrics.rpc_metrics(method) is counted

    counted.done("OK", 0.002, unary=True)
    counted.done("NOT_FOUND", 0.001, unary=True)
    counted.done("OK", 30.0, unary=False)  # a stream: counted, not timed

    assert global_value("automator67_rpcs_total", {"method": method, "code": "OK"}) == 2
    assert global_value("automator67_rpcs_total", {"method": method, "code": "NOT_FOUND"}) == 1
    assert global_value("automator67_rpc_duration_seconds_count", {"method": method}) == 2
    assert global_value("automator67_rpc_duration_seconds_sum", {"method": method}) == (
        pytest.approx(0.003)
    )


def test_the_heartbeat_counter_is_a_plain_int_exported_as_a_counter() -> None:
    registry = CollectorRegistry()
    beats = prometheus.LoopCounter("test_beats", "beats", registry)
    for _ in range(3):
        beats.inc()
    assert registry.get_sample_value("test_beats_total") == 3


def test_status_codes_are_named() -> None:
    import grpc

    assert metrics.code_name(grpc.StatusCode.NOT_FOUND) == "NOT_FOUND"
    assert metrics.code_name(16) == "UNAUTHENTICATED"
    assert metrics.code_name(None) == "UNKNOWN"


def test_placements_count_replicas_newly_assigned_to_a_node() -> None:
    old = (Replica(0, "a"), Replica(1))
    new = (Replica(0, "a"), Replica(1, "b"), Replica(2, "c"))
    assert _placements(old, new) == 2
    assert _placements(new, new) == 0
    assert _placements((Replica(0, "a"),), (Replica(0, "a", superseded=True), Replica(0, "b"))) == 1


async def test_the_exporter_serves_metrics_over_http_and_stops(
    store: Store, clock: FakeClock
) -> None:
    nodes, deployments = await registries(store, clock)
    node = await nodes.register(SPEC)
    nodes.stream_opened(node.id)
    exporter = prometheus.Exporter(
        "127.0.0.1", 0, prometheus.StateSource(nodes.stats, deployments.stats)
    )
    exporter.start()
    try:
        assert exporter.port > 0
        body = await asyncio.to_thread(_get, f"http://127.0.0.1:{exporter.port}/metrics")
        assert 'automator67_nodes{status="READY"} 1.0' in body
        assert "automator67_heartbeats_received_total" in body
        assert "process_cpu_seconds_total" in body
    finally:
        await exporter.stop()
    with pytest.raises(OSError):
        await asyncio.to_thread(_get, f"http://127.0.0.1:{exporter.port}/metrics")


async def test_a_taken_metrics_port_is_a_config_error(store: Store, clock: FakeClock) -> None:
    nodes, deployments = await registries(store, clock)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = prometheus.Exporter(
            "127.0.0.1", port, prometheus.StateSource(nodes.stats, deployments.stats)
        )
        with pytest.raises(ConfigError, match="A67_METRICS_PORT"):
            exporter.start()
    # Nothing was left registered: a second exporter may start.
    again = prometheus.Exporter(
        "127.0.0.1", 0, prometheus.StateSource(nodes.stats, deployments.stats)
    )
    again.start()
    await again.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def test_the_metrics_port_is_off_by_default_and_set_by_env_or_flag() -> None:
    assert parse_config([], {}).metrics_port == 0
    assert parse_config([], {"A67_METRICS_PORT": "9464"}).metrics_port == 9464
    assert parse_config(["--metrics-port", "9100"], {"A67_METRICS_PORT": "9464"}).metrics_port == (
        9100
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--metrics-port", "-1"],
        ["--metrics-port", "65536"],
        ["--port", "9464", "--metrics-port", "9464"],
    ],
)
def test_an_invalid_metrics_port_is_a_config_error(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match="A67_METRICS_PORT"):
        parse_config(argv, {})
