"""Tracing on: the tracer provider, its OTLP/gRPC exporter, and what the server installs with it.

Imported only when `controller.tracing.enabled()` says so (it imports OpenTelemetry, ~100 ms
and ~10 MB that a controller without traces does not pay). Everything the OpenTelemetry SDK
reads from the environment it reads itself: the exporter `OTEL_EXPORTER_OTLP_*` (endpoint,
insecure, headers, certificates, timeout, compression), the sampler `OTEL_TRACES_SAMPLER(_ARG)`
(default: parent-based, always on), the batch processor `OTEL_BSP_*`, the resource
`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, the propagators `OTEL_PROPAGATORS` (default
W3C trace context and baggage). The service name defaults to `automator67-controller` and the
replica's id is `service.instance.id`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind

from controller.logs import trace_id_var
from controller.store.base import Store
from controller.tracing import Span
from controller.tracing.rpc import ServerSpans, excluded_services, sampled_trace_id
from controller.tracing.store import TracedStore

log = logging.getLogger("controller.tracing")

SERVICE_NAME = "automator67-controller"
SCOPE = "controller"  # the instrumentation scope of every span the controller makes
# How long the shutdown waits for the last spans to leave: a collector that is down (the
# exporter retries for OTEL_EXPORTER_OTLP_TIMEOUT, 10 s, per batch) must not hold it.
FLUSH_TIMEOUT_S = 5.0


class Tracing:
    """The process's traces, from start to the last flush."""

    def __init__(
        self, exporter: SpanExporter, resource: Resource, flush_timeout_s: float = FLUSH_TIMEOUT_S
    ) -> None:
        # Sampler from OTEL_TRACES_SAMPLER. Not flushed at exit: `shutdown()` does it, bounded.
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer(SCOPE)
        self._flush_timeout_s = flush_timeout_s

    @classmethod
    def from_environment(cls, instance_id: str, environ: Mapping[str, str] = os.environ) -> Tracing:
        setting = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"  # the signal's own, else the general one
        if setting not in environ:
            setting = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = environ.get(setting, "grpc")
        if protocol.strip().lower() not in ("grpc", ""):
            raise ValueError(
                f"{setting}={protocol!r}: the controller exports traces over OTLP/gRPC only (grpc)"
            )
        exporters = environ.get("OTEL_TRACES_EXPORTER", "otlp")
        if {e.strip().lower() for e in exporters.split(",")} - {"otlp", "none", ""}:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER={exporters!r}: the controller exports traces over OTLP"
                " only (otlp, or none for no traces)"
            )
        return cls(OTLPSpanExporter(), resource(instance_id))

    def server_interceptor(self) -> ServerSpans:
        excluded = os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "")
        return ServerSpans(self.tracer, excluded_services(excluded))

    def traced_store(self, store: Store, system: str) -> TracedStore:
        return TracedStore(store, self.tracer, system)

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[Span]:
        """An internal span, child of the current one (the scheduler's `SpanFactory`)."""
        with self.tracer.start_as_current_span(name, kind=SpanKind.INTERNAL) as span:
            token = trace_id_var.set(sampled_trace_id(span))
            try:
                yield span
            finally:
                trace_id_var.reset(token)

    async def shutdown(self) -> None:
        """Exports the spans still queued and stops, waiting `flush_timeout_s` at most: then
        the spans left are lost (a warning says so) and the process may exit (the flush runs on
        a daemon thread)."""
        flush = threading.Thread(target=self.provider.shutdown, name="a67-trace-flush", daemon=True)
        flush.start()
        await asyncio.to_thread(flush.join, self._flush_timeout_s)
        if flush.is_alive():
            fields = {"waited_s": self._flush_timeout_s}
            log.warning("the last spans were not exported in time", extra={"fields": fields})


def resource(instance_id: str) -> Resource:
    """The process's resource: the environment's attributes over our defaults."""
    defaults = Resource({"service.name": SERVICE_NAME, "service.instance.id": instance_id})
    return Resource.create().merge(defaults).merge(OTELResourceDetector().detect())
