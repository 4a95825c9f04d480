"""The server span of every RPC, by the OpenTelemetry semantic conventions for gRPC.

It sits just inside the request interceptor (`api/interceptors.py`), so the request id is known
(`automator67.request_id` on the span) and a call the auth interceptor refuses still gets its
span. The caller's trace continues: its W3C `traceparent` (any propagator the environment
configures) is read from the call's metadata and the span is its child. Domain errors reach it
as exceptions, before the request interceptor turns them into statuses; it names the code they
will become (`api/handlers.outcome_of`).

Conventions followed (RPC spans): name `package.Service/Method`, kind SERVER, `rpc.system`,
`rpc.service`, `rpc.method`, `rpc.grpc.status_code` (always), `network.peer.address` and
`.port`. Span status is ERROR only for the codes that are the server's fault (UNKNOWN,
DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), with `error.type` naming
the code; a caller's mistake (NOT_FOUND, INVALID_ARGUMENT, ...) leaves it UNSET, its code in
`rpc.grpc.status_code`. Streams get one span for the whole call: an agent's heartbeat stream
holds one open span (~3 KB) for as long as it lasts. Services named in
`OTEL_PYTHON_GRPC_EXCLUDED_SERVICES` (comma-separated, `automator67.v1.AgentService` or
`AgentService`; the variable of OpenTelemetry's gRPC instrumentation) are not traced at all.

Written by hand rather than with opentelemetry-instrumentation-grpc: that interceptor iterates
every response-streaming behavior as an async generator, which the behaviors this chain builds
are not (they write through the context, `handlers.run`), and it cannot see the request id or
the domain's errors. `scripts/bench/tracing.py` measures both on GetNode."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from controller.api.handlers import (
    Behavior,
    Handler,
    ServerInterceptor,
    outcome_of,
    rewrap,
    run,
)
from controller.errors import ControllerError
from controller.logs import request_id_var, trace_id_var

REQUEST_ID_ATTRIBUTE = "automator67.request_id"

# gRPC codes a server span reports as an error (the rest are the caller's to judge).
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def span_status(code: grpc.StatusCode, description: str = "") -> Status:
    """The span status of a server call that ended with `code`."""
    if code in SERVER_ERRORS:
        return Status(StatusCode.ERROR, description or code.name)
    return Status(StatusCode.UNSET)


def sampled_trace_id(span: trace.Span) -> str:
    """The span's trace id in hex, or "" if the trace is not sampled (it will not be stored)."""
    context = span.get_span_context()
    return f"{context.trace_id:032x}" if context.trace_flags.sampled else ""


def method_attributes(full_method: str) -> tuple[str, dict[str, Any]]:
    """The span name and fixed attributes of `/package.Service/Method`."""
    name = full_method.lstrip("/")
    service, _, method = name.partition("/")
    return name, {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def peer_attributes(peer: str) -> dict[str, Any]:
    """`network.peer.*` from grpc's peer string (`ipv4:1.2.3.4:5`, `ipv6:[::1]:5`, `unix:...`)."""
    transport, _, rest = peer.partition(":")
    if transport not in ("ipv4", "ipv6"):
        return {}
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return {}
    return {"network.peer.address": host.strip("[]"), "network.peer.port": int(port)}


def excluded_services(text: str) -> frozenset[str]:
    """The services `OTEL_PYTHON_GRPC_EXCLUDED_SERVICES` names."""
    return frozenset(name.strip() for name in text.split(",") if name.strip())


class ServerSpans(ServerInterceptor):
    def __init__(self, tracer: trace.Tracer, excluded: frozenset[str] = frozenset()) -> None:
        self._tracer = tracer
        self._excluded = excluded
        # Per method: its span name and fixed attributes, or None if its service is excluded.
        self._methods: dict[str, tuple[str, dict[str, Any]] | None] = {}
        # The metadata keys the configured propagators read (traceparent, tracestate, baggage).
        self._fields = frozenset(propagate.get_global_textmap().fields)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if method not in self._methods:
            self._methods[method] = self._describe(method)
        described = self._methods[method]
        if described is None:
            return handler
        metadata = handler_call_details.invocation_metadata
        streaming = handler.response_streaming
        return rewrap(
            handler, lambda behavior: self._wrap(behavior, described, metadata, streaming)
        )

    def _describe(self, method: str) -> tuple[str, dict[str, Any]] | None:
        name, attributes = method_attributes(method)
        service = attributes["rpc.service"]
        if service in self._excluded or service.rpartition(".")[2] in self._excluded:
            return None
        return name, attributes

    def _wrap(
        self,
        behavior: Behavior,
        described: tuple[str, dict[str, Any]],
        metadata: Any,
        response_streaming: bool,
    ) -> Behavior:
        name, fixed = described
        tracer, fields = self._tracer, self._fields

        async def traced(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            carrier = {k: v for k, v in metadata or () if k in fields and isinstance(v, str)}
            parent = propagate.extract(carrier) if carrier else otel_context.Context()
            attributes = {**fixed, **peer_attributes(context.peer())}
            attributes[REQUEST_ID_ATTRIBUTE] = request_id_var.get()
            with tracer.start_as_current_span(
                name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                # Not reset: the call's task ends with it, and the request interceptor's log
                # lines for the call (outside this span) carry the trace id too.
                trace_id_var.set(sampled_trace_id(span))
                code_name, message = "OK", ""
                try:
                    return await run(behavior, request, context, response_streaming)
                except (Exception, asyncio.CancelledError) as exc:
                    code_name = outcome_of(exc, context)
                    if isinstance(exc, ControllerError):
                        message = str(exc)[:256]  # what the caller is told (UNAVAILABLE...)
                    if code_name == "INTERNAL" and not isinstance(exc, aio.AbortError):
                        span.record_exception(exc)  # a crash: the request interceptor hides it
                    raise
                finally:
                    code = grpc.StatusCode[code_name]
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    status = span_status(code, message)
                    if status.status_code is StatusCode.ERROR:
                        span.set_attribute("error.type", code_name)
                        span.set_status(status)

        return traced
