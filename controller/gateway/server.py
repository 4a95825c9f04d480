"""The HTTP/JSON gateway: an aiohttp server on the controller's event loop that serves the routes
of the services' `google.api.http` annotations by calling the same gRPC server through a
channel to it.

Going through gRPC, not around it, is the point: the request interceptor (request id, error
table, logs, metrics) and the auth interceptor (token, role, limits, audit) run on every HTTP
call exactly as on a gRPC one. The channel reaches the server on a Unix socket in a private
folder (mode 0700, made at start, removed at stop) that `server.py` adds as a second, plaintext
port: with TLS or mTLS on the TCP port the gateway needs neither a client certificate nor a
trusted name, and only this user (who can read the key files anyway) can connect to it. Bearer
tokens are still checked on it. The HTTP port itself serves TLS (and requires client
certificates) when the gRPC port does.

Forwarded as metadata: `authorization`, `x-request-id`, `traceparent`, `tracestate`, every
`Grpc-Metadata-KEY` header as KEY (grpc-gateway's convention), and the caller's address as
`x-forwarded-for`. Answered: the call's `x-request-id` as a header (from the trailers of a unary
call, the initial metadata of a stream), other initial metadata as `Grpc-Metadata-KEY`. Server
streams (watches) are newline-delimited JSON, one `{"result": ...}` per message and a final
`{"error": ...}` line if the stream fails after it started (grpc-gateway's format); an error
before the first message is a plain error answer."""

from __future__ import annotations

import json
import logging
import re
import ssl
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import Message
from grpc import aio

from controller import errors
from controller.gateway import transcode
from controller.gateway.errors import GatewayError, from_domain, from_rpc_error, internal, refused
from controller.gateway.routes import NoRoute, Route, Router, WrongMethod

log = logging.getLogger("controller.gateway")

FORWARDED = ("authorization", "x-request-id", "traceparent", "tracestate")
METADATA_PREFIX = "grpc-metadata-"
REQUEST_ID = "x-request-id"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_ASCII_VALUE = re.compile(r"[\x20-\x7e]*")
_METADATA_KEY = re.compile(r"[a-z0-9_.-]+")
# Keys grpc or HTTP/2 own, or that the gateway sets itself: never taken from a client's header.
_RESERVED = {"content-type", "te", "user-agent", "host", "connection", "x-forwarded-for"}
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNITS_S = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
JSON_TYPE = "application/json"
NDJSON_TYPE = "application/x-ndjson"


class HttpGateway:
    """Serves `routes` on host:port, calling the gRPC server at `target` (`unix:/path`)."""

    def __init__(
        self,
        routes: list[Route],
        host: str,
        port: int,
        target: str,
        *,
        max_body_bytes: int,
        shutdown_grace_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.router = Router(routes)
        self.host = host
        self.port = port
        self.target = target
        self.max_body_bytes = max_body_bytes
        self.shutdown_grace_s = shutdown_grace_s
        self.ssl_context = ssl_context
        self._channel: aio.Channel | None = None
        self._calls: dict[str, Any] = {}
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Binds the port (OSError if it is taken) and opens the channel."""
        # The server bounds what it accepts and sends; the channel adds no limit of its own.
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._channel = aio.insecure_channel(self.target, options=options)
        for route in self.router.routes:
            if route.rpc in self._calls:
                continue
            kind = (
                self._channel.unary_stream if route.server_streaming else self._channel.unary_unary
            )
            self._calls[route.rpc] = kind(
                route.rpc,
                request_serializer=_serialize,
                response_deserializer=route.response_type.FromString,
            )
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{path:.*}", self._handle)
        # A client that goes away cancels its call (a watch would otherwise hold its stream).
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=self.shutdown_grace_s,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            await self._channel.close(None)
            raise
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stops listening and lets requests in flight finish (within the shutdown grace)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._channel is not None:
            await self._channel.close(None)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._serve(request)
        except Exception:  # a bug here: the Google error shape, no internals, like the RPCs'
            request_id = uuid.uuid4().hex
            log.exception("http request crashed", extra={"fields": {"request_id": request_id}})
            return _error_response(internal(request_id))

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        try:
            route, values = self.router.match(request.method, request.raw_path.split("?", 1)[0])
        except NoRoute:
            return _error_response(
                refused(grpc.StatusCode.NOT_FOUND, "PATH_NOT_FOUND", "no such path", 404)
            )
        except WrongMethod as wrong:
            error = refused(
                grpc.StatusCode.UNIMPLEMENTED,
                "METHOD_NOT_ALLOWED",
                f"{request.method} is not allowed here; allowed: {', '.join(wrong.allowed)}",
                405,
            )
            error.headers["Allow"] = ", ".join(wrong.allowed)
            return _error_response(error)
        try:
            body = await request.read() if route.body else b""
            message = transcode.request_of(route, values, request.query.items(), body)
            deadline_s = _timeout_of(request)
        except web.HTTPRequestEntityTooLarge:
            return _error_response(
                refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "LIMIT_EXCEEDED",
                    f"the body is larger than {self.max_body_bytes} bytes",
                    413,
                )
            )
        except GatewayError as error:
            return _error_response(error)
        metadata = _metadata_of(request)
        if route.server_streaming:
            return await self._stream(request, route, message, metadata, deadline_s)
        return await self._unary(route, message, metadata, deadline_s)

    async def _unary(
        self,
        route: Route,
        message: Message,
        metadata: Sequence[tuple[str, str]],
        deadline_s: float | None,
    ) -> web.StreamResponse:
        call = self._calls[route.rpc](message, metadata=metadata, timeout=deadline_s)
        try:
            response = await call
        except aio.AioRpcError as error:
            return _error_response(from_rpc_error(error), _metadata_of_call(error))
        headers = _headers_of(
            (*(await call.initial_metadata() or ()), *_request_id(await call.trailing_metadata()))
        )
        status = 200
        if route.rpc == HEALTH_CHECK and response.status != response.SERVING:
            status = 503  # so load balancers and probes read it from the status line
        text = json.dumps(transcode.response_of(route, response), separators=(",", ":"))
        return web.Response(text=text, status=status, content_type=JSON_TYPE, headers=headers)

    async def _stream(
        self,
        request: web.Request,
        route: Route,
        message: Message,
        metadata: Sequence[tuple[str, str]],
        deadline_s: float | None,
    ) -> web.StreamResponse:
        call = self._calls[route.rpc](message, metadata=metadata, timeout=deadline_s)
        try:
            messages = call.__aiter__()
            try:
                first = await messages.__anext__()
            except StopAsyncIteration:
                first = None
            except aio.AioRpcError as error:
                return _error_response(from_rpc_error(error), _metadata_of_call(error))
            response = web.StreamResponse(headers=_headers_of(await call.initial_metadata()))
            response.content_type = NDJSON_TYPE
            await response.prepare(request)
            try:
                if first is not None:
                    await _write(response, {"result": transcode.response_of(route, first)})
                    async for item in messages:
                        await _write(response, {"result": transcode.response_of(route, item)})
            except aio.AioRpcError as error:
                await _write(response, from_rpc_error(error).body())
            await response.write_eof()
            return response
        finally:
            call.cancel()  # a no-op once the stream ended; ends it if the client left


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


async def _write(response: web.StreamResponse, item: Any) -> None:
    await response.write(json.dumps(item, separators=(",", ":")).encode() + b"\n")


def _metadata_of(request: web.Request) -> list[tuple[str, str]]:
    metadata = []
    for key, value in request.headers.items():
        lower = key.lower()
        if lower.startswith(METADATA_PREFIX):
            lower = lower[len(METADATA_PREFIX) :]
        elif lower not in FORWARDED:
            continue
        # grpc refuses binary keys given as text and values outside printable ASCII.
        if (
            _METADATA_KEY.fullmatch(lower)
            and not lower.startswith("grpc-")
            and not lower.endswith("-bin")
            and lower not in _RESERVED
            and _ASCII_VALUE.fullmatch(value)
        ):
            metadata.append((lower, value))
    if request.remote:
        metadata.append(("x-forwarded-for", request.remote))
    return metadata


def _timeout_of(request: web.Request) -> float | None:
    """`Grpc-Timeout` (grpc's own format: `10S`, `500m`) as the call's deadline, as
    grpc-gateway takes it; none by default, like a gRPC client that sets none."""
    raw = request.headers.get("Grpc-Timeout")
    if raw is None:
        return None
    match = _TIMEOUT.fullmatch(raw.strip())
    if match is None:
        violation = errors.FieldViolation(
            "grpc-timeout", "expected 1-8 digits and H, M, S, m, u or n"
        )
        raise from_domain(errors.InvalidArgumentError([violation]))
    return int(match.group(1)) * _TIMEOUT_UNITS_S[match.group(2)]


def _request_id(trailers: Any) -> tuple[tuple[str, str], ...]:
    """The request id a call with one response sends in its trailers (a stream sends it in its
    initial metadata: `api/interceptors.py`)."""
    return tuple((key, value) for key, value in trailers or () if key == REQUEST_ID)


def _metadata_of_call(error: aio.AioRpcError) -> tuple[Any, ...]:
    return (*(error.initial_metadata() or ()), *_request_id(error.trailing_metadata()))


def _headers_of(metadata: Any) -> dict[str, str]:
    headers = {}
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue
        headers["X-Request-Id" if key == REQUEST_ID else f"Grpc-Metadata-{key}"] = value
    return headers


def _error_response(error: GatewayError, metadata: Any = None) -> web.Response:
    headers = {**_headers_of(metadata), **error.headers}
    return web.Response(
        text=error.json(), status=error.http_status, content_type=JSON_TYPE, headers=headers
    )
