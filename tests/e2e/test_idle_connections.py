"""Connections that never speak HTTP/2 are closed once the handshake timeout passes, so that idle
sockets cannot hold the controller's file descriptors (20,000 of them locked new clients out).
The test server runs with a short timeout (A67_HANDSHAKE_TIMEOUT_S); the sockets send nothing,
or only part of the client preface; a real client still gets answers afterwards."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .controller_process import ControllerProcess

HANDSHAKE_TIMEOUT_S = 0.5
SOCKETS = 50
# The most a socket may stay open: the timeout plus a generous margin for a loaded machine
# (grpc's default, when the setting is not applied, is 120 s).
CLOSED_WITHIN_S = 15.0
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    process = ControllerProcess(
        tmp_path_factory.mktemp("idle") / "data",
        extra_args=["--handshake-timeout-s", str(HANDSHAKE_TIMEOUT_S)],
    )
    try:
        yield process.start()
    finally:
        process.stop()


def open_sockets(port: int, count: int, first_bytes: bytes) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=CLOSED_WITHIN_S)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Reads (and drops) what the server sends until it closes the connection (True) or the
    deadline passes (False)."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


@pytest.mark.parametrize(
    "first_bytes",
    [b"", PREFACE[:10]],
    ids=["a socket that sends nothing", "a socket that sends part of the preface"],
)
def test_a_connection_without_a_handshake_is_closed_after_the_timeout(
    controller: ControllerProcess, first_bytes: bytes
) -> None:
    started = time.monotonic()
    sockets = open_sockets(controller.port, SOCKETS, first_bytes)
    try:
        deadline = started + CLOSED_WITHIN_S
        still_open = [s for s in sockets if not closed_by_server(s, deadline)]
        elapsed_s = time.monotonic() - started
    finally:
        for sock in sockets:
            sock.close()

    assert still_open == [], f"{len(still_open)} of {SOCKETS} sockets still open"
    assert elapsed_s >= HANDSHAKE_TIMEOUT_S * 0.9  # closed by the timeout, not at once


async def test_a_real_client_is_served_while_idle_sockets_wait(
    controller: ControllerProcess,
) -> None:
    sockets = open_sockets(controller.port, SOCKETS, b"")
    try:
        async with aio.insecure_channel(controller.address) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10.0
            )
    finally:
        for sock in sockets:
            sock.close()

    assert health.status == health_pb2.HealthCheckResponse.SERVING
