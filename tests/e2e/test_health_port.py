"""The plaintext health port (`--health-port`, controller/health_port.py) against a real
controller serving TLS: the kubelet's grpc probe cannot speak TLS, so it is pointed there.

- the main port refuses plaintext, the health port answers SERVING in plaintext without a token,
  for the whole server and each service;
- nothing but grpc.health.v1.Health is on it: every other method is UNIMPLEMENTED;
- on SIGTERM it reports NOT_SERVING as soon as the main port does, keeps answering so while the
  main server's grace runs, and closes once the server has stopped;
- a taken health port stops the start with one line naming the setting."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.server import SERVICES

from .auth_helpers import call_status, served_methods
from .conftest import StartController
from .controller_process import ROOT, ControllerProcess, controller_env
from .test_tls import Pki, channel_credentials, tls_args

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CALL_TIMEOUT_S = 10.0
REFUSED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
# Long enough that a held call keeps the main server in its grace for the whole check below.
GRACE_S = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.make()


@pytest.fixture
def tls_controller(
    start_controller: StartController, pki: Pki, tmp_path: Path
) -> Iterator[tuple[ControllerProcess, str]]:
    """A controller serving TLS on its main port, and the address of its health port."""
    port = free_port()
    args = [
        *tls_args(pki, tmp_path / "tls", mutual=False),
        "--health-port",
        str(port),
        "--shutdown-grace-s",
        str(GRACE_S),
    ]
    process = start_controller(extra_args=args)
    serving = process.log.wait_for(lambda line: line.get("msg") == "serving", 5)
    assert serving["health_port"] == port
    yield process, f"127.0.0.1:{port}"


async def check(address: str, service: str = "", deadline_s: float = CALL_TIMEOUT_S) -> Any:
    """Health/Check as the kubelet sends it: plaintext, no metadata."""
    async with aio.insecure_channel(address) as channel:
        return await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline_s
        )


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_the_health_port_answers_plaintext_while_the_main_port_is_tls_only(
    tls_controller: tuple[ControllerProcess, str],
) -> None:
    process, health_address = tls_controller

    # The kubelet's probe against the main port: no TLS handshake, no answer.
    assert await code_of(check(process.address)) in REFUSED
    statuses = {
        service: (await check(health_address, service)).status for service in ("", *SERVICES)
    }
    assert set(statuses.values()) == {SERVING}, statuses
    # An unknown service is NOT_FOUND there, as on the main port.
    assert await code_of(check(health_address, "no.such.Service")) is grpc.StatusCode.NOT_FOUND


async def unserved_status(channel: aio.Channel, path: str, metadata: Any) -> grpc.StatusCode:
    """How a call of `path` ends. A request stream is half-closed at once with nothing written:
    a write in flight when the server answers UNIMPLEMENTED makes grpc.aio's client report
    INTERNAL instead (grpc/grpc#36066), which would say nothing of the server."""
    if not served_methods()[path].client_streaming:
        return await call_status(channel, path, metadata)
    identity = bytes
    call = channel.stream_stream(path, identity, identity)(iter(()), metadata=metadata)
    return await code_of(call.read())


async def test_nothing_but_health_is_served_on_the_health_port(
    tls_controller: tuple[ControllerProcess, str],
) -> None:
    process, health_address = tls_controller
    others = [path for path in served_methods() if not path.startswith("/grpc.health.v1.")]
    async with aio.insecure_channel(health_address) as channel:
        # With the admin token, which would let each through on the main port.
        codes = {path: await unserved_status(channel, path, process.metadata) for path in others}

    assert "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" in codes
    assert "/automator67.v1.NodeService/RegisterNode" in codes
    assert set(codes.values()) == {grpc.StatusCode.UNIMPLEMENTED}, codes


async def test_sigterm_turns_the_health_port_not_serving_then_closes_it(
    tls_controller: tuple[ControllerProcess, str], pki: Pki
) -> None:
    process, health_address = tls_controller
    async with (
        aio.secure_channel(process.address, channel_credentials(pki.ca)) as main,
        aio.insecure_channel(health_address) as probe,
    ):
        # A call held open on the main port keeps its server in the shutdown grace.
        held = health_pb2_grpc.HealthStub(main).Watch(health_pb2.HealthCheckRequest())
        watched = health_pb2_grpc.HealthStub(probe).Watch(health_pb2.HealthCheckRequest())
        assert (await asyncio.wait_for(held.read(), CALL_TIMEOUT_S)).status == SERVING
        assert (await asyncio.wait_for(watched.read(), CALL_TIMEOUT_S)).status == SERVING

        process.send_signal(signal.SIGTERM)

        assert (await asyncio.wait_for(held.read(), CALL_TIMEOUT_S)).status == NOT_SERVING
        assert (await asyncio.wait_for(watched.read(), CALL_TIMEOUT_S)).status == NOT_SERVING
        # During the grace a new probe is answered (not refused): NOT_SERVING, so the kubelet
        # takes the pod out of the Service's endpoints rather than counting a failed connection.
        during_grace = await check(health_address)
        assert during_grace.status == NOT_SERVING
        held.cancel()  # the grace ends early: the server stops, then the health port closes
        ended = await code_of(asyncio.wait_for(watched.read(), CALL_TIMEOUT_S))

    assert process.wait() == 0
    assert ended in {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE}, ended
    assert await code_of(check(health_address, deadline_s=2.0)) in REFUSED


def test_a_taken_health_port_stops_the_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = ControllerProcess(tmp_path / "data", extra_args=["--health-port", str(port)])
        result = subprocess.run(
            command.command,
            cwd=ROOT,
            env=controller_env(LOG_LEVEL="warning"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "A67_HEALTH_PORT" in last and str(port) in last
