"""OpenTelemetry traces end to end: a real controller exporting over OTLP/gRPC to a real
receiver (`otlp_receiver.py`), called by the Python SDK inside a client span.

One call's whole tree is checked: the client's span -> the controller's server span (same
trace, parent = the client's span) -> the store transaction's span; and a scheduler pass that
places a replica is a span with its store write beneath it. Without the environment variable,
the controller imports no OpenTelemetry at all."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from automator67.aio import AsyncClient
from automator67.errors import NotFoundError, UnauthenticatedError
from automator67.v1 import agent_service_pb2_grpc, node_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ..contract import postgres_server
from .conftest import StartController, open_channel
from .controller_process import ROOT, ControllerProcess, controller_env
from .heartbeat_helpers import Agent, register_node
from .otlp_receiver import ReceivedSpan, Receiver
from .seed import seed_node, web_deployment
from .test_postgres_store import provision_keys

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
UNSET = trace_pb2.Status.STATUS_CODE_UNSET
REGISTER = "automator67.v1.NodeService/RegisterNode"
GET_NODE = "automator67.v1.NodeService/GetNode"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def export_to(receiver: Receiver, monkeypatch: pytest.MonkeyPatch, delay_ms: int) -> None:
    """The standard environment variables, for the controllers started next: spans go to
    `receiver` in batches every `delay_ms`."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", str(delay_ms))
    monkeypatch.setenv("OTEL_SERVICE_NAME", "a67-e2e")
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "TRACEPARENT", "TRACESTATE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def traced(
    receiver: Receiver, start_controller: StartController, monkeypatch: pytest.MonkeyPatch
) -> ControllerProcess:
    """A controller exporting its spans to `receiver` as they end (50 ms batches)."""
    export_to(receiver, monkeypatch, delay_ms=50)
    return start_controller()


def client_tracer() -> tuple[TracerProvider, InMemorySpanExporter]:
    """The test's own tracing, as an application using the SDK has (checked locally)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_one_call_is_one_tree_from_the_client_to_the_store(
    traced: ControllerProcess, receiver: Receiver
) -> None:
    provider, _ = client_tracer()
    tracer = provider.get_tracer("e2e")
    metadata = (("x-request-id", "trace-e2e-register"),)
    async with AsyncClient(traced.address, token=traced.admin_token, metadata=metadata) as client:
        with tracer.start_as_current_span("operator registers a node") as client_span:
            registered = await client.register_node(seed_node())
    context = client_span.get_span_context()
    trace_id, client_span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"

    server = await receiver.wait_for(
        lambda s: s.name == REGISTER and s.trace_id == trace_id, "of RegisterNode"
    )
    assert server.span.kind == SERVER
    assert server.parent_span_id == client_span_id  # the controller continued the client's trace
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == "automator67.v1.NodeService"
    assert server.attributes["rpc.method"] == "RegisterNode"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["automator67.request_id"] == "trace-e2e-register"
    assert server.attributes["network.peer.address"] == "127.0.0.1"
    assert server.resource["service.name"] == "a67-e2e"
    assert server.span.status.code == UNSET

    def is_the_insert(s: ReceivedSpan) -> bool:  # one create, or a group commit of several
        return s.parent_span_id == server.span_id and s.name.startswith("create")

    store = await receiver.wait_for(is_the_insert, "of the store's create under the server span")
    assert store.trace_id == trace_id
    assert store.span.kind == CLIENT
    assert store.attributes["db.system.name"] == "sqlite"
    assert store.attributes["db.operation.name"] in ("create", "create_many")
    assert store.attributes["db.collection.name"] == "nodes"
    # Every span of the call lies inside the server's, in time too.
    for child in receiver.children_of(server):
        assert server.span.start_time_unix_nano <= child.span.start_time_unix_nano
        assert child.span.end_time_unix_nano <= server.span.end_time_unix_nano
    assert registered.node.id


async def test_a_caller_error_is_on_the_span_as_its_status_code(
    traced: ControllerProcess, receiver: Receiver
) -> None:
    provider, exporter = client_tracer()
    tracer = provider.get_tracer("e2e")
    metadata = (("x-request-id", "trace-e2e-missing"),)
    async with AsyncClient(traced.address, token=traced.admin_token, metadata=metadata) as client:
        with tracer.start_as_current_span("operator looks up a node"), pytest.raises(NotFoundError):
            await client.get_node(str(uuid.uuid4()))
    (client_span,) = exporter.get_finished_spans()
    assert client_span.context is not None
    trace_id = f"{client_span.context.trace_id:032x}"

    server = await receiver.wait_for(
        lambda s: s.name == GET_NODE and s.trace_id == trace_id, "of the failed GetNode"
    )
    assert server.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND
    assert server.attributes["automator67.request_id"] == "trace-e2e-missing"
    # The semantic conventions: a caller's mistake is not the server's error.
    assert server.span.status.code == UNSET
    assert "error.type" not in server.attributes
    # The call's log line names its trace: from a log line to the trace, and back.
    logged = traced.log.wait_for(
        lambda line: line.get("request_id") == "trace-e2e-missing" and "code" in line, 30
    )
    assert logged["trace_id"] == trace_id, logged


async def test_a_refused_call_has_its_span_too(
    traced: ControllerProcess, receiver: Receiver
) -> None:
    metadata = (("x-request-id", "trace-e2e-no-token"),)
    async with AsyncClient(traced.address, metadata=metadata) as client:
        with pytest.raises(UnauthenticatedError):
            await client.get_node_stats()
    server = await receiver.wait_for(
        lambda s: s.attributes.get("automator67.request_id") == "trace-e2e-no-token",
        "of the refused call",
    )
    assert server.name == "automator67.v1.NodeService/GetNodeStats"
    assert server.attributes["rpc.grpc.status_code"] == 16  # UNAUTHENTICATED
    assert server.span.status.code == UNSET


async def test_a_traceparent_in_the_environment_is_continued(
    traced: ControllerProcess, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a script's `automator67 ...` command joins the script's trace (no span current)."""
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    monkeypatch.setenv("TRACEPARENT", f"00-{trace_id}-{parent_id}-01")
    async with AsyncClient(traced.address, token=traced.admin_token) as client:
        await client.get_node_stats()
    server = await receiver.wait_for(lambda s: s.trace_id == trace_id, "in the script's trace")
    assert server.parent_span_id == parent_id


async def test_spans_still_queued_are_exported_at_shutdown(
    receiver: Receiver, start_controller: StartController, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_to(receiver, monkeypatch, delay_ms=600_000)  # no batch leaves on its own in a test
    controller = start_controller()
    metadata = (("x-request-id", "trace-e2e-last-words"),)
    token = controller.admin_token
    async with AsyncClient(controller.address, token=token, metadata=metadata) as client:
        await client.get_node_stats()
    assert controller.terminate() == 0  # SIGTERM: the ordered shutdown flushes the spans
    server = await receiver.wait_for(
        lambda s: s.attributes.get("automator67.request_id") == "trace-e2e-last-words",
        "of the call made before the shutdown",
    )
    assert server.name == "automator67.v1.NodeService/GetNodeStats"


async def test_a_call_without_a_client_span_starts_its_own_trace(
    traced: ControllerProcess, receiver: Receiver
) -> None:
    async with AsyncClient(traced.address, token=traced.admin_token) as client:
        await client.get_node_stats()
    server = await receiver.wait_for(
        lambda s: s.name == "automator67.v1.NodeService/GetNodeStats", "of GetNodeStats"
    )
    assert server.parent_span_id == ""  # a root span
    assert len(server.attributes["automator67.request_id"]) == 32  # the id the server made


async def test_a_scheduler_pass_that_places_a_replica_is_a_span_with_its_write(
    traced: ControllerProcess, receiver: Receiver
) -> None:
    async with open_channel(traced.address) as channel:
        node = await register_node(node_service_pb2_grpc.NodeServiceStub(channel))
        agent = await Agent.connect(agent_service_pb2_grpc.AgentServiceStub(channel), node.id)
        try:
            async with AsyncClient(traced.address, token=traced.admin_token) as client:
                await client.create_deployment(web_deployment("placed-web", replicas=1))
            placing = await receiver.wait_for(
                lambda s: (
                    s.name == "scheduler.pass"
                    and s.attributes.get("automator67.scheduler.placements", 0) >= 1
                ),
                "of a pass that placed a replica",
            )
        finally:
            await agent.discard()
    assert placing.parent_span_id == ""  # a pass is a trace of its own
    assert placing.attributes["automator67.scheduler.reconciled"] >= 1
    write = await receiver.wait_for(
        lambda s: s.parent_span_id == placing.span_id and s.name == "update_many deployments",
        "of the pass's write",
    )
    assert write.attributes["db.operation.batch.size"] >= 1


def test_without_the_environment_variable_nothing_of_opentelemetry_loads(tmp_path: Path) -> None:
    """The server's start and stop, run in a clean interpreter: no module of OpenTelemetry nor
    of the tracing that uses it (the interceptor, the store wrapper) is ever imported."""
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        from controller.config import parse_config
        from controller.server import Controller
        from grpc import aio
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async def main():
            config = parse_config(
                ["--port", "0", "--host", "127.0.0.1", "--data-dir", {str(tmp_path)!r}],
                environ={{}},
            )
            controller = Controller(config)
            await controller.start()
            async with aio.insecure_channel(f"127.0.0.1:{{controller.port}}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
            await controller.stop()
            loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
            tracing = sorted(m for m in sys.modules if m.startswith("controller.tracing."))
            traced = controller.tracing is not None
            print(json.dumps({{"loaded": loaded, "tracing": tracing, "traced": traced}}))

        asyncio.run(main())
        """
    )
    env = controller_env()
    for name in [k for k in env if k.startswith("OTEL_")]:
        del env[name]
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["loaded"] == [] and seen["tracing"] == [], seen
    assert seen["traced"] is False


def test_an_exporter_protocol_it_does_not_ship_stops_the_start_with_one_line(
    tmp_path: Path,
) -> None:
    env = controller_env(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
    )
    command = [sys.executable, "-m", "controller", "serve", "--port", "0"]
    command += ["--host", "127.0.0.1", "--data-dir", str(tmp_path)]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()  # before anything else: no key was generated
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in line and "grpc" in line, line


async def test_an_automator67_command_joins_the_trace_of_the_script_that_runs_it(
    traced: ControllerProcess, receiver: Receiver
) -> None:
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    env = controller_env(
        A67_ADDR=traced.address,
        A67_TOKEN=traced.admin_token,
        TRACEPARENT=f"00-{trace_id}-{parent_id}-01",
    )
    command = [sys.executable, "-m", "controller", "stats", "-o", "json"]
    out = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    server = await receiver.wait_for(lambda s: s.trace_id == trace_id, "of the command's call")
    assert server.parent_span_id == parent_id
    assert server.span.kind == SERVER


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty database on the suite's PostgreSQL server (stopped after the test)."""
    try:
        yield postgres_server.database_url()
    finally:
        postgres_server.stop()


async def test_on_postgresql_the_store_spans_name_it(
    receiver: Receiver,
    start_controller: StartController,
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    postgres_url: str,
) -> None:
    provision_keys(data_dir)
    export_to(receiver, monkeypatch, delay_ms=50)
    controller = start_controller(extra_args=["--store-url", postgres_url])
    metadata = (("x-request-id", "trace-e2e-postgres"),)
    token = controller.admin_token
    async with AsyncClient(controller.address, token=token, metadata=metadata) as client:
        await client.register_node(seed_node())
    server = await receiver.wait_for(
        lambda s: s.attributes.get("automator67.request_id") == "trace-e2e-postgres",
        "of RegisterNode",
    )
    store = await receiver.wait_for(
        lambda s: s.parent_span_id == server.span_id and s.name.startswith("create"),
        "of the store's create on PostgreSQL",
    )
    assert store.attributes["db.system.name"] == "postgresql"
    assert store.attributes["db.collection.name"] == "nodes"
