"""A real OTLP/gRPC trace receiver for tests: `TraceService/Export` on a free 127.0.0.1 port,
keeping every span it is sent. Tests wait on it for the spans they expect (a condition with a
timeout), never sleep.

It serves on its own threads (a sync grpc server), not on the test's event loop: a controller
stopped by a blocking fixture teardown still flushes its last spans to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

WAIT_S = 30.0  # spans leave the controller every OTEL_BSP_SCHEDULE_DELAY; generous for CI


@dataclass(frozen=True)
class ReceivedSpan:
    span: trace_pb2.Span
    resource: dict[str, Any]  # the resource attributes of the process that sent it

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes_of(self.span.attributes)

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()


def value_of(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def attributes_of(pairs: Sequence[common_pb2.KeyValue]) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._arrived = threading.Condition()
        self._server: grpc.Server | None = None
        self.port = 0

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._arrived:
            return list(self._spans)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = [
            ReceivedSpan(span, attributes_of(resource_spans.resource.attributes))
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._arrived:
            self._spans.extend(received)
            self._arrived.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def start(self) -> Receiver:
        server = grpc.server(futures.ThreadPoolExecutor(4, thread_name_prefix="otlp-receiver"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(None).wait()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_for(
        self, predicate: Callable[[ReceivedSpan], bool], what: str, wait_s: float = WAIT_S
    ) -> ReceivedSpan:
        """The first span received that matches `predicate`, waiting for it up to `wait_s`
        (on a thread: the test's event loop keeps serving its own streams meanwhile)."""
        found: list[ReceivedSpan] = []

        def arrived() -> bool:
            found[:] = [s for s in self._spans if predicate(s)][:1]
            return bool(found)

        def wait() -> bool:
            with self._arrived:
                return self._arrived.wait_for(arrived, wait_s)

        if not await asyncio.to_thread(wait):
            names = sorted({s.name for s in self.spans})
            raise AssertionError(f"no span {what} in {wait_s}s; received: {names}")
        return found[0]

    def children_of(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.parent_span_id == parent.span_id]
