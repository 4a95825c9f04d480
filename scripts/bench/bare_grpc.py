"""The floor of the unary and stream benchmarks: a bare grpc.aio server with the controller's
NodeService and AgentService stubs and nothing else (no interceptors, no auth, no registry, no
store).

GetNode parses the same GetNodeRequest the controller gets and answers a node with the asked id
(a copy of one node made like the benchmark's, every field the controller fills filled);
ListNodes parses its request and answers one page of 50 such nodes, built once. So the distance
from the controller to this server, measured with the same client, pacing and run
(`unary.py`), is what the project adds to a call; this server is what grpc.aio itself costs.

Heartbeat answers a hello with a SessionStart and each beat with a BeatAck carrying its sequence
and the receive time, reading and writing through the context (grpc.aio's cheapest way to serve
a bidirectional stream: an async generator over the request iterator held ~0.6 KB more per open
stream): what any Python gRPC server holding the streams pays (`fleet.py --floor`).

    python scripts/bench/bare_grpc.py --port 50099      # SERVING on grpc.health.v1 when ready
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import grpc
from automator67.v1 import heartbeat_pb2 as hb
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as ns
from google.protobuf import duration_pb2, timestamp_pb2
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controller import event_loop  # asyncio.run on the chosen loop, as the controller runs

PAGE = 50
SERVICE = "automator67.v1.NodeService"
AGENT_SERVICE = "automator67.v1.AgentService"
EOF: Any = aio.EOF  # type: ignore[attr-defined]  # grpc's stubs do not declare it


def template(i: int = 0) -> node_pb2.Node:
    """A node as the controller answers one registered by the benchmark (fleet.node)."""
    stamp = timestamp_pb2.Timestamp(seconds=1_764_000_000 + i, nanos=123_456_000)
    return node_pb2.Node(
        id=f"00000000-0000-4000-8000-{i:012d}",
        provider="fly",
        endpoint=f"https://sim-{i}.bench.invalid",
        region="us-east-1",
        capabilities=node_pb2.Capabilities(cpu_cores=4, memory_gb=8, disk_gb=50),
        labels={"tier": "web"},
        status=node_pb2.NODE_STATUS_PENDING,
        create_time=stamp,
        update_time=stamp,
        etag=str(1000 + i),
    )


class BareNodeService:
    """The two methods the benchmark calls, as grpc's generated code would register them."""

    def __init__(self) -> None:
        self._node = template()
        self._page = ns.ListNodesResponse(
            nodes=[template(i) for i in range(PAGE)], next_page_token="x" * 90
        )

    async def GetNode(self, request: ns.GetNodeRequest, context: Any) -> ns.GetNodeResponse:
        response = ns.GetNodeResponse()
        response.node.CopyFrom(self._node)
        response.node.id = request.node_id
        return response

    async def ListNodes(self, request: ns.ListNodesRequest, context: Any) -> ns.ListNodesResponse:
        return self._page

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "GetNode": grpc.unary_unary_rpc_method_handler(
                    self.GetNode,
                    request_deserializer=ns.GetNodeRequest.FromString,
                    response_serializer=ns.GetNodeResponse.SerializeToString,
                ),
                "ListNodes": grpc.unary_unary_rpc_method_handler(
                    self.ListNodes,
                    request_deserializer=ns.ListNodesRequest.FromString,
                    response_serializer=ns.ListNodesResponse.SerializeToString,
                ),
            },
        )


class BareAgentService:
    """Heartbeat: a session for the hello, an ack for each beat, nothing kept."""

    def __init__(self) -> None:
        self._interval = duration_pb2.Duration(seconds=10)

    async def Heartbeat(self, requests: Any, context: Any) -> None:
        while True:
            request = await context.read()
            if request is EOF:
                return
            if request.HasField("beat"):
                response = hb.HeartbeatResponse(ack=hb.BeatAck(sequence=request.beat.sequence))
                response.ack.receive_time.GetCurrentTime()
                await context.write(response)
            elif request.HasField("hello"):
                session = hb.SessionStart(
                    session_id=request.hello.node_id,
                    heartbeat_interval=self._interval,
                    node_status=node_pb2.NODE_STATUS_READY,
                )
                await context.write(hb.HeartbeatResponse(session=session))

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler(
            AGENT_SERVICE,
            {
                "Heartbeat": grpc.stream_stream_rpc_method_handler(
                    self.Heartbeat,
                    request_deserializer=hb.HeartbeatRequest.FromString,
                    response_serializer=hb.HeartbeatResponse.SerializeToString,
                ),
            },
        )


async def serve(port: int) -> None:
    # The controller's queue of calls waiting for a handler (controller/server.py): grpc's
    # default (1,000) refuses a fleet's stream opens at 50,000 streams.
    server = aio.server(
        options=[
            ("grpc.server.max_pending_requests", 20000),
            ("grpc.server.max_pending_requests_hard_limit", 30000),
        ]
    )
    server.add_generic_rpc_handlers((BareNodeService().handler(), BareAgentService().handler()))
    checks = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        event_loop.run(serve(args.port), args.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
