"""Writing an agent: `AgentClient` (an `AsyncClient` that can also open the heartbeat stream of
AgentService) and `HeartbeatSession`, one node's stream.

    async with AgentClient("127.0.0.1:50051", token=NODE_TOKEN) as client:
        async with client.heartbeat(node_id, agent_version="0.1.0") as session:
            await session.beat(heartbeat_pb2.NodeLoad(cpu_percent=12.5))
            response = await session.receive()  # an ack, Assignments, a Reconnect, or None

Errors are the typed errors of `automator67.errors` (NotFoundError for an unknown node, ...).
The stream has no deadline; opening it has one (`open_timeout_s`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType

import grpc
from grpc import aio

from automator67.aio import AsyncClient
from automator67.errors import from_rpc_error
from automator67.v1 import agent_service_pb2_grpc, node_pb2
from automator67.v1 import heartbeat_pb2 as hb

HeartbeatCall = aio.StreamStreamCall[hb.HeartbeatRequest, hb.HeartbeatResponse]


class HeartbeatProtocolError(Exception):
    """The controller answered a hello with something other than `SessionStart`."""


class HeartbeatSession:
    """One heartbeat stream of one node, opened by `AgentClient.heartbeat`.

    Contract:
    - Entering (`async with`, or `await open()`) sends the hello and returns once `SessionStart`
      arrived; `session_id`, `interval_s` and `node_status` are then set. It raises ApiError
      (NotFoundError for an unknown node), TimeoutError after `open_timeout_s`, or
      HeartbeatProtocolError.
    - `beat()` is for one task at a time and `receive()` for one task at a time; a beating task
      and a receiving task may run concurrently.
    - `close()` ends the request stream (the server sees a clean end of stream, not a
      cancellation) and waits for the server to finish; leaving the `async with` calls it,
      unless the block was cancelled, which cancels the call instead.
    """

    def __init__(
        self,
        start: Callable[[], HeartbeatCall],
        hello: hb.AgentHello,
        *,
        open_timeout_s: float = 10.0,
    ) -> None:
        self._start = start
        self._hello = hello
        self._open_timeout_s = open_timeout_s
        self._call: HeartbeatCall | None = None
        self._sequence = 0
        self.session_id = ""
        self.interval_s = 0.0
        self.node_status: node_pb2.NodeStatus.ValueType = node_pb2.NODE_STATUS_UNSPECIFIED

    @property
    def sequence(self) -> int:
        """The sequence number of the last beat sent (0 before the first)."""
        return self._sequence

    async def open(self) -> HeartbeatSession:
        call = self._start()
        self._call = call
        try:
            async with asyncio.timeout(self._open_timeout_s):
                await call.write(hb.HeartbeatRequest(hello=self._hello))
                first = await call.read()
        except grpc.RpcError as error:
            call.cancel()
            raise from_rpc_error(error) from error
        except BaseException:
            call.cancel()
            raise
        if not isinstance(first, hb.HeartbeatResponse) or first.WhichOneof("kind") != "session":
            call.cancel()
            raise HeartbeatProtocolError(f"expected SessionStart, got {first!r}")
        self.session_id = first.session.session_id
        self.interval_s = first.session.heartbeat_interval.ToTimedelta().total_seconds()
        self.node_status = first.session.node_status
        return self

    async def beat(
        self, load: hb.NodeLoad | None = None, replicas: Iterable[hb.ReplicaReport] = ()
    ) -> int:
        """Sends the next beat and returns its sequence number (1, 2, ...). Raises ApiError if
        the stream failed, asyncio.InvalidStateError if it ended or was closed."""
        self._sequence += 1
        beat = hb.Beat(sequence=self._sequence, load=load, replicas=replicas)
        try:
            await self._open_call().write(hb.HeartbeatRequest(beat=beat))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return self._sequence

    async def receive(self) -> hb.HeartbeatResponse | None:
        """The next message from the controller (an ack, Assignments, a Reconnect, or a kind
        this library does not know yet), or None once the server ended the stream with OK.
        Raises ApiError if it ended with an error."""
        try:
            response = await self._open_call().read()
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        if isinstance(response, hb.HeartbeatResponse):
            return response
        return None  # grpc.aio.EOF

    async def __aiter__(self) -> AsyncIterator[hb.HeartbeatResponse]:
        while (response := await self.receive()) is not None:
            yield response

    async def close(self, timeout_s: float = 5.0) -> grpc.StatusCode:
        """Ends the request stream and waits up to `timeout_s` for the server to end the call;
        returns its status code. After the timeout the call is cancelled (CANCELLED). Safe to
        call twice, and after the stream broke."""
        call = self._call
        if call is None:
            return grpc.StatusCode.OK
        try:
            async with asyncio.timeout(timeout_s):
                # If the call ended meanwhile, its status says how.
                with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                    await call.done_writing()
                code: grpc.StatusCode = await call.code()
                return code
        except TimeoutError:
            call.cancel()
            return grpc.StatusCode.CANCELLED

    def cancel(self) -> None:
        """Cancels the call at once (the server sees a cancellation)."""
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> HeartbeatSession:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self.cancel()
        else:
            await self.close()

    def _open_call(self) -> HeartbeatCall:
        if self._call is None:
            raise asyncio.InvalidStateError("the heartbeat session is not open")
        return self._call


class AgentClient(AsyncClient):
    """An `AsyncClient` that also opens heartbeat streams (AgentService). An agent registers
    with an admin token (`register_node`), then streams with the node token it got back."""

    def heartbeat(
        self,
        node_id: str,
        agent_version: str = "",
        drivers: Sequence[str] = (),
        *,
        open_timeout_s: float = 10.0,
    ) -> HeartbeatSession:
        """A heartbeat stream for `node_id`, opened when entered (see `HeartbeatSession`)."""
        hello = hb.AgentHello(node_id=node_id, agent_version=agent_version, drivers=drivers)
        agents = agent_service_pb2_grpc.AgentServiceStub(self.channel)

        def start() -> HeartbeatCall:
            return agents.Heartbeat(None, metadata=self._call_metadata())

        return HeartbeatSession(start, hello, open_timeout_s=open_timeout_s)


def unverified_claims(token: str) -> dict[str, object]:
    """The claims of a JWT read WITHOUT checking its signature: for a client deciding what its
    own token lets it try (an agent with a node token skips registration), never for granting
    anything. {} if `token` is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def node_of_token(token: str) -> str:
    """The node id a node token names (its subject, role `node`), else ""."""
    claims = unverified_claims(token) if token else {}
    subject = claims.get("sub")
    return subject if claims.get("role") == "node" and isinstance(subject, str) else ""
