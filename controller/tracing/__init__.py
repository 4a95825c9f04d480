"""OpenTelemetry traces: whether they are on, and the seam the domain traces through.

Tracing is on when the standard OpenTelemetry environment asks for an OTLP exporter
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, `OTEL_SDK_DISABLED`
not true, `OTEL_TRACES_EXPORTER` not `none`); `enabled()` is the one place that decides. Off,
nothing of OpenTelemetry is imported, no interceptor is installed and the store is not wrapped:
the cost is one environment lookup at start. On, `controller.tracing.otel` (imported only then)
builds the tracer, the RPC interceptor (`rpc.py`), the store wrapper (`store.py`) and the span
factory the scheduler is handed.

This module imports nothing but the standard library, so that any layer may take a
`SpanFactory` (as it takes a `Clock`) without importing OpenTelemetry."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

Attribute = str | int | float | bool


class Span(Protocol):
    """What the domain may do with a span it was handed: attach facts to it."""

    def set_attribute(self, key: str, value: Attribute) -> object: ...


SpanFactory = Callable[[str], contextlib.AbstractContextManager[Span]]


class _NoSpan:
    def set_attribute(self, key: str, value: Attribute) -> None:
        pass


NO_SPAN: Span = _NoSpan()


@contextlib.contextmanager
def no_span(name: str) -> Iterator[Span]:
    """The `SpanFactory` of a process that does not trace."""
    yield NO_SPAN


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether this environment asks for traces exported over OTLP."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if exporters <= {"none", ""}:
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )
