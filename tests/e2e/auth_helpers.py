"""Helpers of the security tests: tokens of every kind (valid, expired, forged, ...) for a test
controller, and a generic caller that invokes any RPC by its descriptor and reports the status
it ended with."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from automator67.v1 import agent_service_pb2, deployment_service_pb2, node_service_pb2
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc import aio
from grpc.aio import EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from controller.auth.keys import SigningKeys, signing_keys
from controller.auth.principals import Role
from controller.auth.tokens import TokenIssuer, TokenSettings
from controller.config import parse_config
from controller.security import token_settings

from .controller_process import ControllerProcess

CALL_TIMEOUT_S = 30.0  # generous: a loaded CI machine may be slow, never wrong
Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def _segment(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@dataclass(frozen=True)
class Forge:
    """Makes tokens for one controller, right and wrong."""

    keys: SigningKeys
    settings: TokenSettings

    @classmethod
    def of(cls, process: ControllerProcess) -> Forge:
        config = parse_config(["--data-dir", str(process.data_dir), *process.extra_args], {})
        return cls(signing_keys(config, generate=False), token_settings(config))

    def valid(self, role: Role, subject: str, ttl_s: float = 600) -> str:
        return TokenIssuer(self.keys, self.settings).issue(role, subject, ttl_s)

    def expired(self, role: Role, subject: str) -> str:
        long_ago = time.time() - 3600
        return TokenIssuer(self.keys, self.settings, now=lambda: long_ago).issue(role, subject, 60)

    def wrong_signature(self, role: Role, subject: str) -> str:
        other = ed25519.Ed25519PrivateKey.generate()
        impostor = SigningKeys("EdDSA", other.public_key(), other, "elsewhere")
        return TokenIssuer(impostor, self.settings).issue(role, subject, 600)

    def alg_none(self, role: Role, subject: str) -> str:
        """An unsigned token whose claims are otherwise perfect."""
        now = int(time.time())
        claims = {
            "iss": self.settings.issuer,
            "aud": self.settings.audience,
            "sub": subject,
            "role": role.value,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims)}."

    def wrong_audience(self, role: Role, subject: str) -> str:
        settings = TokenSettings(self.settings.issuer, "another-service", self.settings.leeway_s)
        return TokenIssuer(self.keys, settings).issue(role, subject, 600)


# The token kinds of the matrix: how to make one for (role, subject); None means no header.
TokenKind = Callable[[Forge, Role, str], str | None]
TOKEN_KINDS: dict[str, TokenKind] = {
    "no token": lambda f, r, s: None,
    "expired": lambda f, r, s: f.expired(r, s),
    "wrong signature": lambda f, r, s: f.wrong_signature(r, s),
    "alg none": lambda f, r, s: f.alg_none(r, s),
    "wrong audience": lambda f, r, s: f.wrong_audience(r, s),
    "valid": lambda f, r, s: f.valid(r, s),
}


def served_methods() -> dict[str, MethodDescriptor]:
    """Every RPC the controller serves, by full name `/package.Service/Method`."""
    methods: dict[str, MethodDescriptor] = {}
    modules = (
        node_service_pb2,
        agent_service_pb2,
        deployment_service_pb2,
        health_pb2,
        reflection_pb2,
    )
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = method
    return methods


def _message(descriptor: Any, **fields: Any) -> Any:
    return message_factory.GetMessageClass(descriptor)(**fields)


def first_request(method: MethodDescriptor, node_id: str) -> Any:
    """A harmless request: empty (so a write fails validation and changes nothing), except the
    opening message a stream needs to get an answer."""
    if method.full_name == "automator67.v1.AgentService.Heartbeat":
        hello = {"node_id": node_id, "agent_version": "matrix"}
        return _message(method.input_type, hello=hello)
    if method.containing_service.full_name.startswith("grpc.reflection"):
        return _message(method.input_type, list_services="")
    return _message(method.input_type)


async def call_status(
    channel: aio.Channel, path: str, metadata: Metadata, node_id: str = ""
) -> grpc.StatusCode:
    """Calls `path` with `metadata` and returns how it ended: OK once a unary call returns or a
    stream sends its first message, else the error's code."""
    method = served_methods()[path]
    request = first_request(method, node_id)
    output = message_factory.GetMessageClass(method.output_type)
    serialize, deserialize = (lambda m: m.SerializeToString()), output.FromString
    streaming_in, streaming_out = method.client_streaming, method.server_streaming
    call: Any
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            if not streaming_in and not streaming_out:
                await channel.unary_unary(path, serialize, deserialize)(request, metadata=metadata)
                return grpc.StatusCode.OK
            if not streaming_in:
                call = channel.unary_stream(path, serialize, deserialize)(
                    request, metadata=metadata
                )
            else:
                open_bidi: Any = channel.stream_stream(path, serialize, deserialize)
                call = open_bidi(metadata=metadata)  # requests are written one by one
                try:
                    await call.write(request)
                except aio.AioRpcError:
                    # A refusal of the call ends our write too; the call's status says why.
                    refused: grpc.StatusCode = await call.code()
                    return refused
            try:
                answer = await call.read()
                return grpc.StatusCode.OK if answer is not EOF else await call.code()
            finally:
                call.cancel()
    except aio.AioRpcError as error:
        return error.code()
