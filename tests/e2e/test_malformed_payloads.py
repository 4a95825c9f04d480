"""Bytes that are not the message a method takes get INVALID_ARGUMENT ("the request is not a
valid <Message>"), never UNKNOWN, and the answer names no Python class: for unary, server-stream
and bidi methods alike. Without a token, a method that needs one answers UNAUTHENTICATED (the
bytes are never parsed); health checks, which are open, still answer INVALID_ARGUMENT.

The requests are raw bytes, sent through a generic channel with no serializer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc import aio
from grpc_health.v1 import health_pb2

from .auth_helpers import served_methods
from .controller_process import ControllerProcess, Metadata

CALL_TIMEOUT_S = 10.0


def _key(number: int, wire_type: int) -> bytes:
    return bytes([number << 3 | wire_type])  # field numbers here are below 16


def _bad_utf8(message: Descriptor, depth: int = 0) -> bytes | None:
    """A payload whose first string field (at most two messages deep) holds invalid UTF-8, or
    None when `message` has no string field."""
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return _key(field.number, 2) + b"\x02\xff\xfe"
    for field in message.fields:
        if field.message_type is not None and depth < 2:
            inner = _bad_utf8(field.message_type, depth + 1)
            if inner is not None:
                return _key(field.number, 2) + bytes([len(inner)]) + inner
    return None


# Each kind of broken payload, for one request message (None: the message cannot have it).
PAYLOADS: dict[str, Callable[[Descriptor], bytes | None]] = {
    "garbage bytes": lambda message: b"\xff\xff\xff",
    "a truncated field": lambda message: b"\x0a\x05ab",  # 5 bytes announced, 2 follow
    "invalid utf-8 in a string field": _bad_utf8,
}

NODES = "/automator67.v1.NodeService"
DEPLOYMENTS = "/automator67.v1.DeploymentService"
METHODS = {
    "unary RegisterNode": f"{NODES}/RegisterNode",
    "unary GetNode": f"{NODES}/GetNode",
    "unary CreateDeployment": f"{DEPLOYMENTS}/CreateDeployment",
    "server stream WatchNodes": f"{NODES}/WatchNodes",
    "server stream WatchDeployments": f"{DEPLOYMENTS}/WatchDeployments",
    "bidi Heartbeat": "/automator67.v1.AgentService/Heartbeat",
    "bidi server reflection": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "unary health check": "/grpc.health.v1.Health/Check",
    "server stream health watch": "/grpc.health.v1.Health/Watch",
}
OPEN_METHODS = {"unary health check", "server stream health watch"}


def request_type(method: str) -> Descriptor:
    descriptor = served_methods()[METHODS[method]].input_type
    assert descriptor is not None
    return descriptor


def payload_of(method: str, payload: str) -> bytes | None:
    return PAYLOADS[payload](request_type(method))


CASES = [
    pytest.param(method, payload, id=f"{method}-{payload}")
    for method in METHODS
    for payload in PAYLOADS
    if payload_of(method, payload) is not None
]


@pytest.fixture
def controller(shared_controller: ControllerProcess) -> ControllerProcess:
    """Nothing here is stored: one server serves the module."""
    return shared_controller


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str


async def send_raw(address: str, method: str, payload: bytes, metadata: Metadata) -> Answer:
    """Sends `payload` as the (first) request of `method` and returns how the call ended (OK:
    a unary answer, or a stream's first message)."""
    path = METHODS[method]
    descriptor = served_methods()[path]
    async with aio.insecure_channel(address) as typed_channel:
        channel: Any = typed_channel  # grpc-stubs insist on serializers; raw bytes need none
        async with asyncio.timeout(CALL_TIMEOUT_S):
            try:
                if descriptor.client_streaming:
                    bidi = channel.stream_stream(path)(metadata=metadata)
                    try:
                        await bidi.write(payload)
                        await bidi.done_writing()
                    except aio.AioRpcError:
                        pass  # refused before the write landed: the status says why
                    async for _ in bidi:
                        break
                    bidi.cancel()
                elif descriptor.server_streaming:
                    stream = channel.unary_stream(path)(payload, metadata=metadata)
                    async for _ in stream:
                        break
                    stream.cancel()
                else:
                    await channel.unary_unary(path)(payload, metadata=metadata)
            except aio.AioRpcError as error:
                return Answer(error.code(), error.details() or "")
        return Answer(grpc.StatusCode.OK, "")


def assert_no_internals(answer: Answer) -> None:
    for leak in ("<class", "DecodeError", "google.protobuf", "Traceback", "Unexpected"):
        assert leak not in answer.details, answer


@pytest.mark.parametrize(("method", "payload"), CASES)
async def test_a_malformed_payload_with_a_token_is_an_invalid_argument(
    controller: ControllerProcess, method: str, payload: str
) -> None:
    raw = payload_of(method, payload)
    assert raw is not None

    answer = await send_raw(controller.address, method, raw, controller.metadata)

    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer
    name = request_type(method).name
    assert answer.details == f"the request is not a valid {name}"
    assert_no_internals(answer)


@pytest.mark.parametrize(("method", "payload"), CASES)
async def test_a_malformed_payload_without_a_token_is_refused_without_internals(
    controller: ControllerProcess, method: str, payload: str
) -> None:
    raw = payload_of(method, payload)
    assert raw is not None

    answer = await send_raw(controller.address, method, raw, ())

    expected = (
        grpc.StatusCode.INVALID_ARGUMENT
        if method in OPEN_METHODS
        else grpc.StatusCode.UNAUTHENTICATED
    )
    assert answer.code == expected, answer
    assert_no_internals(answer)


async def test_the_server_still_answers_after_malformed_payloads(
    controller: ControllerProcess,
) -> None:
    for method in METHODS:
        await send_raw(controller.address, method, b"\xff\xff\xff", controller.metadata)

    async with aio.insecure_channel(controller.address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        health = await check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
