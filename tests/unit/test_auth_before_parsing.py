"""Nothing is parsed before authentication: a refused call (no token, a bad token, a role that
may not call the method) is answered without its request ever reaching the method's request
deserializer, whatever the call's kind and however large its body. Refused calls still get a
request id, a log line and their count in the metrics, from the request interceptor.

A real grpc.aio server on a free port runs both interceptors, as the controller does, in front of
handlers whose deserializers count the requests they parse."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ed25519
from grpc import aio

from controller import metrics, prometheus
from controller.api.interceptors import REQUEST_ID_KEY, RequestInterceptor
from controller.auth.interceptor import REFUSAL_GRACE_S, AuthInterceptor
from controller.auth.keys import SigningKeys
from controller.auth.principals import Role
from controller.auth.tokens import TokenIssuer, TokenSettings, TokenVerifier

metrics.enable()  # what a controller with a metrics port does: count, in prometheus.py

SETTINGS = TokenSettings(issuer="automator67", audience="automator67", leeway_s=0)
SERVICE = "automator67.v1.NodeService"
REGISTER = f"/{SERVICE}/RegisterNode"  # unary, admin only, audited
WATCH = f"/{SERVICE}/WatchNodes"  # server stream, readers
HEARTBEAT = f"/{SERVICE}/Heartbeat"  # bidi stream
TWELVE_MB = b"\x0a" + b"x" * (12 * 1024 * 1024)  # big, and not even a valid message
TIMEOUT_S = 10.0


@dataclass
class Parsed:
    """How many requests each method's deserializer parsed."""

    counts: Counter[str]

    def deserializer(self, method: str) -> Callable[[bytes], bytes]:
        def deserialize(data: bytes) -> bytes:
            self.counts[method] += 1
            return data

        return deserialize


@dataclass(frozen=True)
class Server:
    address: str
    parsed: Parsed
    issuer: TokenIssuer

    def bearer(self, role: Role) -> tuple[tuple[str, str], ...]:
        token = self.issuer.issue(role, f"{role.value}-1", 60)
        return (("authorization", f"Bearer {token}"),)


def _handlers(parsed: Parsed) -> Any:
    async def unary(request: bytes, context: Any) -> bytes:
        return b""

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b""

    async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for _ in requests:
            yield b""

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "RegisterNode": grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=parsed.deserializer(REGISTER)
            ),
            "WatchNodes": grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=parsed.deserializer(WATCH)
            ),
            "Heartbeat": grpc.stream_stream_rpc_method_handler(
                bidi, request_deserializer=parsed.deserializer(HEARTBEAT)
            ),
        },
    )


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    async with serving(REFUSAL_GRACE_S) as running:
        yield running


@contextlib.asynccontextmanager
async def serving(refusal_grace_s: float) -> AsyncIterator[Server]:
    private = ed25519.Ed25519PrivateKey.generate()
    keys = SigningKeys("EdDSA", private.public_key(), private, "test")
    verifier = TokenVerifier(keys, SETTINGS)
    auth = AuthInterceptor(verifier, max_streams_per_principal=10, refusal_grace_s=refusal_grace_s)
    grpc_server = aio.server(
        interceptors=[RequestInterceptor(), auth],
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    parsed = Parsed(Counter())
    grpc_server.add_generic_rpc_handlers((_handlers(parsed),))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        yield Server(f"127.0.0.1:{port}", parsed, TokenIssuer(keys, SETTINGS))
    finally:
        await grpc_server.stop(None)


async def call(address: str, method: str, body: bytes, metadata: Any) -> aio.AioRpcError | None:
    """Calls `method` with the raw `body` (the one request, or the stream's first) and returns
    its error, or None if it succeeded."""
    async with aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 16 * 1024 * 1024)]
    ) as typed_channel:
        channel: Any = typed_channel  # grpc-stubs insist on serializers; raw bytes need none
        try:
            if method == REGISTER:
                await channel.unary_unary(method)(body, metadata=metadata, timeout=TIMEOUT_S)
            elif method == WATCH:
                async for _ in channel.unary_stream(method)(
                    body, metadata=metadata, timeout=TIMEOUT_S
                ):
                    break
            else:
                bidi = channel.stream_stream(method)(metadata=metadata, timeout=TIMEOUT_S)
                try:
                    await bidi.write(body)
                    await bidi.done_writing()
                except aio.AioRpcError:
                    pass  # refused before the write landed: the status says why
                async for _ in bidi:
                    break
                bidi.cancel()
        except aio.AioRpcError as error:
            return error
        return None


REFUSALS: dict[str, tuple[str, ...]] = {
    "no token": (),
    "a forged token": ("authorization", "Bearer not.a.token"),
}


@pytest.mark.parametrize("method", [REGISTER, WATCH, HEARTBEAT], ids=["unary", "stream", "bidi"])
@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_an_unauthenticated_call_is_refused_without_parsing_its_request(
    server: Server, method: str, refusal: str
) -> None:
    metadata = (REFUSALS[refusal],) if REFUSALS[refusal] else ()

    error = await call(server.address, method, TWELVE_MB, metadata)

    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED, error
    assert server.parsed.counts[method] == 0


async def test_a_refused_stream_whose_client_reads_first_is_refused_after_the_grace() -> None:
    # A refused request stream waits for its first message or half-close before answering
    # (grpc/grpc#36066, see controller/auth/interceptor.py); a client that only reads still
    # gets its refusal, once the grace is over.
    async with (
        serving(refusal_grace_s=0.2) as running,
        aio.insecure_channel(running.address) as typed_channel,
    ):
        channel: Any = typed_channel  # raw bytes: no serializers
        bidi = channel.stream_stream(HEARTBEAT)(metadata=(), timeout=TIMEOUT_S)
        with pytest.raises(aio.AioRpcError) as refused:
            await bidi.read()
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert running.parsed.counts[HEARTBEAT] == 0


async def test_a_role_that_may_not_call_is_refused_without_parsing(server: Server) -> None:
    error = await call(server.address, REGISTER, TWELVE_MB, server.bearer(Role.VIEWER))

    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert server.parsed.counts[REGISTER] == 0


@pytest.mark.parametrize("method", [REGISTER, WATCH, HEARTBEAT], ids=["unary", "stream", "bidi"])
async def test_an_authorized_call_is_parsed(server: Server, method: str) -> None:
    # The counter counts: without this, a deserializer never called would prove nothing.
    error = await call(server.address, method, b"", server.bearer(Role.ADMIN))

    assert error is None
    assert server.parsed.counts[method] == 1


async def test_a_refused_call_gets_a_request_id_and_is_counted(server: Server) -> None:
    def refused() -> float:
        labels = {"method": REGISTER, "code": "UNAUTHENTICATED"}
        return prometheus.REGISTRY.get_sample_value("automator67_rpcs_total", labels) or 0.0

    before = refused()

    error = await call(server.address, REGISTER, b"", (("x-request-id", "refused-1"),))

    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
    trailers: Any = error.trailing_metadata() or ()  # (key, value) pairs at run time
    assert (REQUEST_ID_KEY, "refused-1") in tuple(trailers)
    # The handler counts in its `finally`, which may run after the client has the status: no
    # event marks it, so it is checked every 10 ms, within a bound.
    async with asyncio.timeout(10):
        while refused() < before + 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert refused() == before + 1


async def test_a_refused_call_gets_a_handler_that_reads_no_message() -> None:
    # Request-streaming, with no deserializer: grpc reads nothing before the refusal, and flow
    # control stops a large body after a window instead of carrying all of it.
    private = ed25519.Ed25519PrivateKey.generate()
    keys = SigningKeys("EdDSA", private.public_key(), private, "test")
    auth = AuthInterceptor(TokenVerifier(keys, SETTINGS), max_streams_per_principal=10)
    parsed = Parsed(Counter())
    original = grpc.unary_unary_rpc_method_handler(
        lambda request, context: b"", request_deserializer=parsed.deserializer(REGISTER)
    )

    async def continuation(details: Any) -> Any:
        return original

    details: Any = type("Details", (), {"method": REGISTER, "invocation_metadata": ()})()
    refused = await auth.intercept_service(continuation, details)

    assert refused.request_streaming and not refused.response_streaming
    assert refused.request_deserializer is None
    assert refused.response_serializer is original.response_serializer
