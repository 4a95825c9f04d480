"""Graceful shutdown on SIGTERM: health watchers hear NOT_SERVING first (grpc_health's
`enter_graceful_shutdown`), the server then stops, and the process exits 0 after logging
`stopped`."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import grpc
from grpc import aio
from grpc.aio import EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import StartController, open_channel
from .controller_process import ControllerProcess
from .rpc_errors import rpc_error

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STREAM_WAIT_S = 10.0


async def next_status(watch: Any) -> Any:
    """The next status on a Watch stream, or `EOF` if the stream ended cleanly."""
    response = await asyncio.wait_for(watch.read(), STREAM_WAIT_S)
    return EOF if response is EOF else response.status


def messages(process: ControllerProcess) -> list[str]:
    return [str(line.get("msg", line.get("raw"))) for line in process.log_lines]


async def test_sigterm_exits_0_after_logging_stopped(controller: ControllerProcess) -> None:
    assert controller.terminate() == 0

    logged = messages(controller)
    # Between the two, the leader hands its lease back ("no longer leading") if it had it.
    shutdown = logged[logged.index("shutting down") :]
    assert shutdown[-1] == "stopped"
    assert set(shutdown[1:-1]) <= {"no longer leading"}, shutdown
    assert not [line for line in controller.log_lines if line.get("level") == "error"]


async def test_an_idle_server_stops_promptly(controller: ControllerProcess) -> None:
    # With no RPC in flight, nothing waits for the shutdown grace period (10 s by default).
    assert controller.terminate(timeout=5.0) == 0


async def test_a_health_watch_sees_not_serving_on_sigterm(
    controller: ControllerProcess, health_stub: Any
) -> None:
    watch = health_stub.Watch(health_pb2.HealthCheckRequest())
    assert await next_status(watch) == SERVING

    controller.send_signal(signal.SIGTERM)

    assert await next_status(watch) == NOT_SERVING
    # A watcher that hears NOT_SERVING goes away; the server then finishes at once.
    watch.cancel()
    assert controller.wait() == 0
    assert messages(controller)[-1] == "stopped"


async def test_a_watch_held_open_is_ended_when_the_grace_period_ends(
    start_controller: StartController,
) -> None:
    process = start_controller(extra_args=["--shutdown-grace-s", "0.5"])
    async with open_channel(process.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="automator67.v1.NodeService")
        )
        assert await next_status(watch) == SERVING

        process.send_signal(signal.SIGTERM)
        assert await next_status(watch) == NOT_SERVING

        try:
            ended: object = await next_status(watch)
        except aio.AioRpcError as error:
            ended = error.code()

    assert ended in (EOF, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert process.wait() == 0
    assert messages(process)[-1] == "stopped"


async def test_calls_after_shutdown_are_unavailable(controller: ControllerProcess) -> None:
    address = controller.address
    assert controller.terminate() == 0

    async with open_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        error = await rpc_error(stub.Check(health_pb2.HealthCheckRequest()))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
