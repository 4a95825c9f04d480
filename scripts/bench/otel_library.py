"""Runs the controller exactly as `python -m controller ...` does, but with the server interceptor
of opentelemetry-instrumentation-grpc (its aio `OpenTelemetryAioServerInterceptor`) where tracing
puts its own (`controller/tracing/rpc.py`), at the same place in the chain, exporting through
the same provider. For tracing.py's comparison of the two on unary calls only: that interceptor
iterates every response-streaming behavior as an async generator, which this chain's are not, so
heartbeat streams and watches fail under it. It also sets no request id on the span."""

from __future__ import annotations

import sys
from typing import Any

if __name__ == "__main__":
    from opentelemetry.instrumentation.grpc._aio_server import OpenTelemetryAioServerInterceptor

    from controller.cli import main
    from controller.tracing import otel

    def library_interceptor(self: otel.Tracing) -> Any:
        return OpenTelemetryAioServerInterceptor(self.tracer)  # type: ignore[no-untyped-call]

    otel.Tracing.server_interceptor = library_interceptor  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
