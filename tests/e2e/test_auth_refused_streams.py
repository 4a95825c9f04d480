"""A refused request stream (a heartbeat opened with a token that may not stream, or with none)
ends with the refusal's own status and ErrorInfo reason on the client, whenever the client
writes: its hello before reading, nothing before reading, a half-close at once, or its hello and
a half-close. Hundreds of attempts, many at once and one after another, through a real server.
So does a stream refused for one too many open streams of its token (RESOURCE_EXHAUSTED).

grpc.aio's client replaces a call's status with INTERNAL ("Internal error from Core") when one
of its writes fails because the server's status already closed the stream (grpc/grpc#36066);
the server therefore answers a refused request stream only once it has the client's first
message or half-close (or after a grace), so that no write of a well-behaved client can land
after the status."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from automator67.v1 import agent_service_pb2_grpc, node_service_pb2_grpc
from automator67.v1 import heartbeat_pb2 as hb
from automator67.v1 import node_service_pb2 as ns
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from controller.auth.principals import Role

from .auth_helpers import Forge, Metadata, bearer
from .controller_process import ControllerProcess
from .seed import seed_node

DETAILS_KEY = "grpc-status-details-bin"
CALL_TIMEOUT_S = 60.0  # generous: a read-first attempt waits for the server's grace
MODES = ("write then read", "read first", "half-close at once", "write and half-close")
CONCURRENT_PER_MODE = 40  # x 4 modes
SEQUENTIAL_PER_MODE = 40  # x 3 modes that write or half-close (read first waits the grace)


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    limited = ["--max-streams-per-principal", "1"]
    process = ControllerProcess(tmp_path_factory.mktemp("refused") / "data", extra_args=limited)
    try:
        yield process.start()
    finally:
        process.stop()


def reason_of(trailers: Any) -> str:
    """The ErrorInfo reason in a call's trailers ('' if there is none)."""
    for key, value in trailers or ():
        if key == DETAILS_KEY:
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return str(info.reason)
    return ""


async def heartbeat_attempt(channel: aio.Channel, metadata: Any, mode: str) -> str:
    """Opens a heartbeat stream, behaves as `mode` says, and returns 'CODE REASON' of its end."""
    stub = agent_service_pb2_grpc.AgentServiceStub(channel)
    call: Any = stub.Heartbeat(None, metadata=metadata)  # requests written one by one
    hello = hb.HeartbeatRequest(hello=hb.AgentHello(node_id=str(uuid.uuid4()), agent_version="t"))
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            try:
                if mode in ("write then read", "write and half-close"):
                    await call.write(hello)
                if mode in ("half-close at once", "write and half-close"):
                    await call.done_writing()
                await call.read()
            except aio.AioRpcError:
                pass  # the call's own status says why, below
            code: grpc.StatusCode = await call.code()
            return f"{code.name} {reason_of(await call.trailing_metadata())}"
    finally:
        call.cancel()


async def attempts_end_as_expected(
    channel: aio.Channel, expected: dict[str, tuple[Metadata, str]]
) -> None:
    """Attempts of every kind in `expected` (its metadata and the 'CODE REASON' it must end
    with) in every mode, many at once, then one after another; fails on any other end."""
    kinds = list(expected)
    wrong: Counter[str] = Counter()
    attempts = 0

    def record(kind: str, mode: str, got: str) -> None:
        nonlocal attempts
        attempts += 1
        if got != expected[kind][1]:
            wrong[f"{kind} / {mode}: {got}"] += 1

    for mode in MODES:  # many at once: each round's calls race each other and the server
        chosen = [kinds[i % len(kinds)] for i in range(CONCURRENT_PER_MODE)]
        ends = await asyncio.gather(
            *(heartbeat_attempt(channel, expected[kind][0], mode) for kind in chosen)
        )
        for kind, got in zip(chosen, ends, strict=True):
            record(kind, mode, got)
    for mode in MODES:  # one after another
        if mode == "read first":
            continue
        for i in range(SEQUENTIAL_PER_MODE):
            kind = kinds[i % len(kinds)]
            record(kind, mode, await heartbeat_attempt(channel, expected[kind][0], mode))
    assert attempts == 4 * CONCURRENT_PER_MODE + 3 * SEQUENTIAL_PER_MODE
    assert not wrong, f"{sum(wrong.values())} of {attempts} attempts ended wrong: {dict(wrong)}"


async def test_a_refused_heartbeat_ends_with_its_refusal_however_the_client_writes(
    controller: ControllerProcess,
) -> None:
    forge = Forge.of(controller)
    async with aio.insecure_channel(controller.address) as channel:
        await attempts_end_as_expected(
            channel,
            {
                "agent-bootstrap": (
                    bearer(forge.valid(Role.AGENT_BOOTSTRAP, "daemonset")),
                    "PERMISSION_DENIED ROLE_NOT_PERMITTED",
                ),
                "viewer": (
                    bearer(forge.valid(Role.VIEWER, "v")),
                    "PERMISSION_DENIED ROLE_NOT_PERMITTED",
                ),
                "no token": ((), "UNAUTHENTICATED TOKEN_INVALID"),
                "expired": (bearer(forge.expired(Role.NODE, "n")), "UNAUTHENTICATED TOKEN_INVALID"),
            },
        )


async def test_a_heartbeat_over_the_stream_limit_ends_with_it_however_the_client_writes(
    controller: ControllerProcess,
) -> None:
    # The controller allows one open stream per token subject: a node's token, streaming for
    # its node, holds it; every further stream of that token is refused as it opens.
    async with aio.insecure_channel(controller.address) as channel:
        nodes = node_service_pb2_grpc.NodeServiceStub(channel)
        registered = await nodes.RegisterNode(
            ns.RegisterNodeRequest(node=seed_node()),
            metadata=controller.metadata,
            timeout=CALL_TIMEOUT_S,
        )
        node_token = bearer(registered.agent_token)
        held = agent_service_pb2_grpc.AgentServiceStub(channel).Heartbeat(None, metadata=node_token)
        try:
            hello = hb.AgentHello(node_id=registered.node.id, agent_version="t")
            await held.write(hb.HeartbeatRequest(hello=hello))
            first: Any = await asyncio.wait_for(held.read(), CALL_TIMEOUT_S)
            assert first.WhichOneof("kind") == "session", first
            await attempts_end_as_expected(
                channel, {"node": (node_token, "RESOURCE_EXHAUSTED STREAM_LIMIT")}
            )
        finally:
            held.cancel()
