"""What tracing costs per call: GetNode paced at a fixed rate against four controllers started
side by side in one run, each with the same nodes registered:

- `off`: no OTEL_* variable (the default: no interceptor, nothing of OpenTelemetry imported);
- `ours`: OTEL_EXPORTER_OTLP_ENDPOINT set, with the controller's own server interceptor
  (controller/tracing/rpc.py);
- `library`: the same, with opentelemetry-instrumentation-grpc's aio server interceptor in its
  place (otel_library.py; unary calls only, see there);
- `sampled`: ours, keeping 1% of the traces (OTEL_TRACES_SAMPLER=parentbased_traceidratio).

The traced controllers export their spans over OTLP/gRPC to a receiver in this process, which
counts them (its CPU is not the server's); `ours` and `library` keep every call (the default
sampler). The windows take turns (off, ours, library, sampled, off, ...), so the machine's load
weighs on the four alike; each figure is also given as a ratio to `off`: the median over runs
of the ratio of each window to the `off` window just before it.

    python scripts/bench/tracing.py --nodes 1000 --rate 500 --duration-s 10 --runs 3

`--spans N` measures instead, in this process, where a traced call's CPU goes: making and ending
N server spans as controller/tracing/rpc.py does (the caller's traceparent read, attributes,
the sampler, the processor's queue), then encoding them to OTLP protobuf as the exporter's
thread does."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import common
import fleet
import grpc
import unary
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

MODES = ("off", "ours", "library", "sampled")
# OTEL_TRACES_SAMPLER(_ARG) of `sampled`: ours, keeping 1% of the traces callers start.
SAMPLED = ("parentbased_traceidratio", "0.01")
BENCH_DIR = Path(__file__).resolve().parent


class SpanSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that counts the spans of each service.name."""

    def __init__(self) -> None:
        self.spans: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(2, thread_name_prefix="otlp-sink"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            names = [
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            ]
            count = sum(len(s.spans) for s in resource_spans.scope_spans)
            with self._lock:
                self.spans[names[0] if names else ""] += count
        return trace_service_pb2.ExportTraceServiceResponse()

    def __enter__(self) -> SpanSink:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(None).wait()


@contextlib.contextmanager
def environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    """This process's environment with `changes` (None: removed), for the servers it starts."""
    saved = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def mode_environment(mode: str, sink: SpanSink) -> dict[str, str | None]:
    changes: dict[str, str | None] = {k: None for k in os.environ if k.startswith("OTEL_")}
    if mode != "off":
        changes["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.port}"
        changes["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
        changes["OTEL_SERVICE_NAME"] = f"bench-{mode}"
    if mode == "sampled":
        changes["OTEL_TRACES_SAMPLER"], changes["OTEL_TRACES_SAMPLER_ARG"] = SAMPLED
    return changes


def tracing_cost(
    nodes: int,
    rate: float,
    runs: int,
    *,
    duration_s: float,
    warmup_s: float = 2.0,
    workers: int = 2,
    server_args: Sequence[str] = (),
) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": nodes, "rate": rate, "call": "GetNode", "modes": {}}
    windows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with SpanSink() as sink, contextlib.ExitStack() as stack:
        servers: dict[str, common.Server] = {}
        ids: dict[str, list[str]] = {}
        for mode in MODES:
            tmp = stack.enter_context(common.workdir(f"tracing-{mode}"))
            entry = BENCH_DIR / "otel_library.py" if mode == "library" else None
            with environment(mode_environment(mode, sink)):
                server = stack.enter_context(
                    common.controller(tmp, server_args, entry_script=entry)
                )
            servers[mode] = server
            ids[mode], _ = asyncio.run(fleet.register_nodes(server.address, nodes, server.metadata))
            common.log(f"tracing: {mode}: {nodes} nodes registered")
        for run in range(runs):
            for mode in MODES:
                w = unary.run_window(
                    servers[mode],
                    ids[mode],
                    "GetNode",
                    rate,
                    workers=workers,
                    concurrency=16,
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                )
                common.log(
                    f"tracing: run {run + 1}/{runs} {mode}: {w['requests_per_s']:.0f} req/s,"
                    f" {w['server_cpu_us_per_call']:.0f} us/call, p50 {w['p50_ms']:.2f} ms,"
                    f" p99 {w['p99_ms']:.2f} ms, errors {w['errors']}"
                )
                windows[mode].append(w)
        spans = dict(sink.spans)
    for mode in MODES:
        summary = common.aggregate(windows[mode])
        summary["per_run"] = windows[mode]
        summary["spans_received"] = spans.get(f"bench-{mode}", 0)
        result["modes"][mode] = summary
    for mode in MODES[1:]:
        result["modes"][mode]["ratio_to_off"] = {
            key: paired_ratio(windows[mode], windows["off"], key)
            for key in ("server_cpu_us_per_call", "p50_ms", "p99_ms")
        }
        added = [
            w["server_cpu_us_per_call"] - o["server_cpu_us_per_call"]
            for w, o in zip(windows[mode], windows["off"], strict=True)
        ]
        result["modes"][mode]["added_cpu_us_per_call"] = round(statistics.median(added), 1)
    return result


def paired_ratio(
    ours: Sequence[Mapping[str, Any]], off: Sequence[Mapping[str, Any]], key: str
) -> float:
    """The median over runs of each run's ratio to the `off` window just before it: adjacent
    windows share the machine's load of the moment, which moves a lot on a shared machine."""
    ratios = [
        w[key] / o[key] for w, o in zip(ours, off, strict=True) if o[key] and o[key] == o[key]
    ]
    return round(statistics.median(ratios), 2) if ratios else float("nan")


def span_costs(count: int) -> dict[str, float]:
    """CPU microseconds per span: made and ended as a server span is, then OTLP-encoded."""
    from opentelemetry import propagate
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from controller.tracing.rpc import method_attributes, peer_attributes

    kept = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("bench")
    name, fixed = method_attributes("/automator67.v1.NodeService/GetNode")
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def one() -> None:
        context = propagate.extract({"traceparent": parent})
        attributes = {**fixed, **peer_attributes("ipv4:127.0.0.1:50000")}
        attributes["automator67.request_id"] = "0123456789abcdef0123456789abcdef"
        with tracer.start_as_current_span(
            name, context=context, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            span.set_attribute("rpc.grpc.status_code", 0)

    for _ in range(min(count, 2000)):  # warm up
        one()
    kept.clear()
    started = time.process_time()
    for _ in range(count):
        one()
    made = time.process_time() - started
    spans: list[ReadableSpan] = list(kept.get_finished_spans())
    started = time.process_time()
    for i in range(0, len(spans), 512):  # the batch processor's default batch
        encode_spans(spans[i : i + 512]).SerializeToString()
    encoded = time.process_time() - started
    return {
        "spans": count,
        "make_and_end_us": round(made / count * 1e6, 1),
        "otlp_encode_us": round(encoded / count * 1e6, 1),
    }


def table(result: Mapping[str, Any]) -> str:
    rows = []
    for mode in MODES:
        m = result["modes"][mode]
        r = m.get("ratio_to_off", {})
        rows.append(
            [
                mode,
                common.fmt(m["requests_per_s"], 0),
                common.fmt(m["server_cpu_us_per_call"], 0),
                common.fmt(r.get("server_cpu_us_per_call", 1.0), 2),
                common.fmt(m.get("added_cpu_us_per_call", 0.0), 0),
                common.fmt(m["p50_ms"], 2),
                common.fmt(r.get("p50_ms", 1.0), 2),
                common.fmt(m["p99_ms"], 2),
                common.fmt(r.get("p99_ms", 1.0), 2),
                str(m["spans_received"]),
            ]
        )
    headers = [
        "tracing",
        "req/s",
        "server CPU us/call",
        "x off",
        "added us/call",
        "p50 ms",
        "x off",
        "p99 ms",
        "x off",
        "spans exported",
    ]
    return common.markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0, help="paced GetNode calls/s")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--auth", choices=("jwt", "off"), default="jwt")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--spans", type=int, default=0, help="per-span costs, in this process")
    args = parser.parse_args(argv)
    if args.spans:
        print(span_costs(args.spans))
        return 0
    common.install_signal_handlers()
    result = tracing_cost(
        args.nodes,
        args.rate,
        args.runs,
        duration_s=args.duration_s,
        workers=args.workers,
        server_args=["--auth", args.auth],
    )
    print(table(result))
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "tracing": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
