"""Tracing's pure parts (when it is on, what a status code makes of a span, the attributes of a
method and a peer, the resource), the store's spans over a real SQLite store, a scheduler pass's
span over real registries, and the SDK's trace context. Spans are read from an in-memory
exporter; the end-to-end path over OTLP is tests/e2e/test_tracing.py."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from automator67.connection import call_metadata, trace_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from controller.clock import FakeClock
from controller.errors import NotFoundError
from controller.models import Capabilities, DeploymentSpec, NodeSpec, Resources
from controller.registry.deployments import DeploymentRegistry
from controller.registry.nodes import NodeRegistry
from controller.registry.sessions import Sessions
from controller.scheduler.loop import Scheduler, SchedulerSettings
from controller.store.base import Store
from controller.tracing import enabled
from controller.tracing.otel import SERVICE_NAME, Tracing, resource
from controller.tracing.rpc import (
    ServerSpans,
    excluded_services,
    method_attributes,
    peer_attributes,
    span_status,
)

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
ENABLED: dict[str, tuple[dict[str, str], bool]] = {
    "no endpoint: off": ({}, False),
    "an endpoint: on": (ENDPOINT, True),
    "a traces endpoint alone: on": (
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"},
        True,
    ),
    "a blank endpoint: off": ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
    "the SDK disabled: off": ({**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, False),
    "the SDK not disabled: on": ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
    "no traces exporter: off": ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
    "the otlp exporter named: on": ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "otlp"}, True),
}


@pytest.mark.parametrize("name", ENABLED)
def test_tracing_is_on_when_the_environment_asks_for_an_otlp_exporter(name: str) -> None:
    environ, expected = ENABLED[name]
    assert enabled(environ) is expected


# The RPC conventions: only the server's own failures make a server span an error.
STATUSES: dict[grpc.StatusCode, StatusCode] = {
    grpc.StatusCode.OK: StatusCode.UNSET,
    grpc.StatusCode.NOT_FOUND: StatusCode.UNSET,
    grpc.StatusCode.INVALID_ARGUMENT: StatusCode.UNSET,
    grpc.StatusCode.ABORTED: StatusCode.UNSET,
    grpc.StatusCode.UNAUTHENTICATED: StatusCode.UNSET,
    grpc.StatusCode.CANCELLED: StatusCode.UNSET,
    grpc.StatusCode.INTERNAL: StatusCode.ERROR,
    grpc.StatusCode.UNAVAILABLE: StatusCode.ERROR,
    grpc.StatusCode.DEADLINE_EXCEEDED: StatusCode.ERROR,
    grpc.StatusCode.UNKNOWN: StatusCode.ERROR,
    grpc.StatusCode.UNIMPLEMENTED: StatusCode.ERROR,
    grpc.StatusCode.DATA_LOSS: StatusCode.ERROR,
}


@pytest.mark.parametrize("code", STATUSES, ids=lambda code: code.name)
def test_a_server_span_is_an_error_only_for_the_server_s_own_failures(
    code: grpc.StatusCode,
) -> None:
    assert span_status(code).status_code is STATUSES[code]


def test_a_server_error_s_span_status_says_what_the_caller_was_told() -> None:
    status = span_status(grpc.StatusCode.UNAVAILABLE, "the store is closed")
    assert status.description == "the store is closed"
    assert span_status(grpc.StatusCode.INTERNAL).description == "INTERNAL"


def test_a_method_is_named_package_service_slash_method() -> None:
    name, attributes = method_attributes("/automator67.v1.NodeService/GetNode")
    assert name == "automator67.v1.NodeService/GetNode"
    assert attributes == {
        "rpc.system": "grpc",
        "rpc.service": "automator67.v1.NodeService",
        "rpc.method": "GetNode",
    }


class CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def test_excluded_services_are_not_traced(tracing: Tracing) -> None:
    spans = ServerSpans(tracing.tracer, excluded_services(" automator67.v1.AgentService,Health "))

    async def answer(request: object, context: object) -> None:
        return None

    handler = grpc.unary_unary_rpc_method_handler(answer)

    async def continuation(details: grpc.HandlerCallDetails) -> Any:
        return handler

    async def installed(method: str) -> bool:
        return await spans.intercept_service(continuation, CallDetails(method)) is not handler

    assert await installed("/automator67.v1.NodeService/GetNode")
    assert not await installed("/automator67.v1.AgentService/Heartbeat")
    assert not await installed("/grpc.health.v1.Health/Check")  # by its short name
    assert await installed("/automator67.v1.NodeService/GetNode")  # decided once per method


PEERS: dict[str, dict[str, object]] = {
    "ipv4:10.1.2.3:5555": {"network.peer.address": "10.1.2.3", "network.peer.port": 5555},
    "ipv6:[::1]:40000": {"network.peer.address": "::1", "network.peer.port": 40000},
    "unix:/tmp/a.sock": {},
    "ipv4:garbage": {},
    "": {},
}


@pytest.mark.parametrize("peer", PEERS)
def test_the_peer_s_address_and_port_come_from_grpc_s_peer_string(peer: str) -> None:
    assert peer_attributes(peer) == PEERS[peer]


def test_the_service_name_defaults_to_the_controller_s_and_the_environment_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    plain = resource("replica-1").attributes
    assert plain["service.name"] == SERVICE_NAME
    assert plain["service.instance.id"] == "replica-1"

    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7,team=ops")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "a67-prod")
    named = resource("replica-1").attributes
    assert named["service.name"] == "a67-prod"
    assert named["service.instance.id"] == "pod-7"
    assert named["team"] == "ops"


REFUSED = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
    "OTEL_TRACES_EXPORTER": "console",
}


@pytest.mark.parametrize("name", REFUSED)
def test_an_exporter_it_does_not_ship_is_refused_by_name(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=name):
        Tracing.from_environment("replica-1", {**ENDPOINT, name: REFUSED[name]})


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exported: InMemorySpanExporter) -> Iterator[Tracing]:
    tracing = Tracing(exported, Resource({}))
    yield tracing
    tracing.provider.shutdown()


def finished(tracing: Tracing, exported: InMemorySpanExporter) -> list[ReadableSpan]:
    tracing.provider.force_flush()
    return list(exported.get_finished_spans())


class StuckExporter(SpanExporter):
    """A collector that never answers, until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.called = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.called.set()
        self.release.wait()
        return SpanExportResult.FAILURE


async def test_a_collector_that_does_not_answer_does_not_hold_the_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = StuckExporter()
    tracing = Tracing(stuck, Resource({}), flush_timeout_s=0.2)
    try:
        with tracing.span("a pass"):
            pass
        await tracing.shutdown()  # returns, though the export never does
        assert stuck.called.is_set()
        assert "the last spans were not exported in time" in caplog.text
    finally:
        stuck.release.set()


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def node_spec() -> NodeSpec:
    return NodeSpec("aws", "https://n.example", "us-east-1", Capabilities(4, 4, 10))


async def test_store_calls_are_spans_inside_a_recording_span_only(
    store: Store, clock: FakeClock, tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    nodes = NodeRegistry(store, clock)
    await nodes.load()
    node = await nodes.register(node_spec())
    traced = tracing.traced_store(store, "sqlite")
    assert await traced.nodes.get(node.id) is not None  # no span is current: no trace
    assert finished(tracing, exported) == []

    with tracing.span("a call") as call:
        assert await traced.nodes.get(node.id) is not None
        with pytest.raises(NotFoundError):
            await traced.nodes.delete("missing")
    spans = {s.name: s for s in finished(tracing, exported)}

    read = spans["get nodes"]
    assert read.kind is SpanKind.CLIENT
    assert parent_id(read) == call.get_span_context().span_id  # type: ignore[attr-defined]
    assert read.attributes == {
        "db.system.name": "sqlite",
        "db.operation.name": "get",
        "db.collection.name": "nodes",
    }
    assert read.status.status_code is StatusCode.UNSET
    failed = spans["delete nodes"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "NotFoundError"


async def test_a_scheduler_pass_that_places_is_a_span_over_its_write(
    store: Store, clock: FakeClock, tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    traced = tracing.traced_store(store, "sqlite")
    nodes = NodeRegistry(traced, clock)
    await nodes.load()
    deployments = DeploymentRegistry(traced, clock)
    await deployments.load()
    sessions = Sessions()
    scheduler = Scheduler(
        deployments,
        nodes,
        sessions,
        clock,
        SchedulerSettings(),
        random.Random(1),
        trace=tracing.span,
    )
    node = await nodes.register(node_spec())
    sessions.open(node.id)
    nodes.stream_opened(node.id)
    await scheduler.run_once()  # no deployment: no pass, no span
    assert finished(tracing, exported) == []
    huge = DeploymentSpec(name="huge", image="busybox", replicas=1, resources=Resources(64, 1))
    await deployments.create(huge)
    await scheduler.run_once()  # reconciles it: it fits nowhere (its status says so)
    await scheduler.run_once()  # reconciles it again, unchanged: parked
    passes = [s.name for s in finished(tracing, exported)].count("scheduler.pass")
    await scheduler.run_once()  # nothing is due: no span
    assert [s.name for s in finished(tracing, exported)].count("scheduler.pass") == passes
    exported.clear()

    spec = DeploymentSpec(name="web", image="busybox", replicas=2, resources=Resources(1, 1))
    await deployments.create(spec)
    await scheduler.run_once()

    spans = finished(tracing, exported)
    (placing,) = [s for s in spans if s.name == "scheduler.pass"]
    assert placing.attributes is not None
    assert placing.attributes["automator67.scheduler.reconciled"] == 1
    assert placing.attributes["automator67.scheduler.placements"] == 2
    assert placing.parent is None  # a pass is a trace of its own
    beneath = {s.name for s in spans if parent_id(s) == placing.context.span_id}
    assert "update_many deployments" in beneath  # the pass's one write


def test_the_sdk_sends_the_current_span_s_context_and_nothing_without_one() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    assert trace_context() == ()
    with provider.get_tracer("test").start_as_current_span("caller") as span:
        context = span.get_span_context()
        sent = dict(call_metadata("t0k3n", (("x-request-id", "r1"),)))
    assert sent["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    assert sent["authorization"] == "Bearer t0k3n"
    assert sent["x-request-id"] == "r1"
    assert "traceparent" not in dict(call_metadata("t0k3n"))


PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_without_a_span_the_sdk_sends_the_traceparent_of_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACEPARENT", PARENT)
    monkeypatch.setenv("TRACESTATE", "vendor=1")
    assert trace_context() == (("traceparent", PARENT), ("tracestate", "vendor=1"))
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("caller") as span:
        sent = dict(trace_context())  # a current span wins over the environment
    assert sent["traceparent"].startswith(f"00-{span.get_span_context().trace_id:032x}-")

    for bad in ("garbage", "00-xyz-b7ad6b7169203331-01", ""):
        monkeypatch.setenv("TRACEPARENT", bad)
        assert trace_context() == ()
