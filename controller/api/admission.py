"""The admission interceptor: registrations and heartbeat stream opens pass a `Gate`
(`controller/admission.py`); every other call passes untouched.

The gate is entered by the call's behavior, not by the interceptor: the auth interceptor, which
sits outside this one, checks the token only after the inner interceptors have returned their
handler, and replaces the behavior of a call it refuses. So only an authenticated, authorized
call ever takes a slot or a place in the queue: a client without a valid token cannot hold
slots (an open it never says hello on holds its place until the refusal's grace ends) and keep
the fleet's registrations waiting. A parked call waits in its own task, awaiting a future, off
the event loop's ready queue. (Refusals, its request id, log line and metrics come from the
request interceptor, outermost, through the one error table.)

The slot is held while the call is handled: a unary call's until its behavior ends; a request
stream's until its first message has been handled (the behavior asks for the second: for a
heartbeat stream, the hello is answered and the stream is open) or the behavior ends.

A call refused when the queue is full gets RESOURCE_EXHAUSTED, reason `OVERLOADED`, with
`retry_after_ms` in its ErrorInfo metadata; agents wait at least that long before they retry
(`controller/agent/session.py`). A refused request stream is answered once its first message or
half-close arrived, or after a grace, as the auth interceptor does (a client writing as the
refusal lands would see INTERNAL instead: grpc/grpc#36066)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc
from automator67.v1 import agent_service_pb2, node_service_pb2
from grpc import aio

from controller.admission import Gate, Overloaded, Ticket
from controller.api.handlers import Behavior, Handler, ServerInterceptor, Wraps, rewrap, run
from controller.errors import ResourceExhaustedError

log = logging.getLogger("controller.admission")
REFUSAL_GRACE_S = 5.0  # as the auth interceptor's
_NODES = node_service_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name
_AGENTS = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
# What a fleet joining at once floods the controller with.
JOIN_METHODS = (f"/{_NODES}/RegisterNode", f"/{_AGENTS}/Heartbeat")


class AdmissionInterceptor(ServerInterceptor):
    """Put inside the auth interceptor (see the module's docstring)."""

    def __init__(self, gate: Gate, methods: Collection[str]) -> None:
        self.gate = gate
        self._methods = frozenset(methods)
        self._wraps = Wraps()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method not in self._methods:
            return handler
        return self._wraps.get(method, handler, lambda inner: self._wrap(method, inner))

    def _wrap(self, method: str, handler: Handler) -> Handler:
        streaming = handler.request_streaming, handler.response_streaming
        return rewrap(handler, lambda behavior: self._admitted(method, behavior, *streaming))

    def _admitted(
        self, method: str, behavior: Behavior, request_streaming: bool, response_streaming: bool
    ) -> Behavior:
        gate = self.gate

        async def wrapped(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            if log.isEnabledFor(logging.DEBUG):
                fields = {
                    "method": method,
                    "inflight": gate.inflight,
                    "queued": gate.queued,
                    "parked": gate.must_wait(),
                }
                log.debug("admission", extra={"fields": fields})
            try:
                ticket = await gate.enter()
            except Overloaded as full:
                if request_streaming:  # see the module's docstring
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(REFUSAL_GRACE_S):
                            await anext(request)
                raise _overloaded(full) from None
            try:
                if request_streaming:
                    request = _ReleasingRequests(request, ticket)
                return await run(behavior, request, context, response_streaming)
            finally:
                ticket.release()

        return wrapped


class _ReleasingRequests:
    """A request stream that releases the call's slot when its second message is asked for."""

    __slots__ = ("_asked", "_requests", "_ticket")  # one per open heartbeat stream

    def __init__(self, requests: AsyncIterator[Any], ticket: Ticket) -> None:
        self._requests = requests
        self._ticket = ticket
        self._asked = 0

    def __aiter__(self) -> _ReleasingRequests:
        return self

    def __anext__(self) -> Awaitable[Any]:  # the inner read itself: no frame of ours per stream
        self._asked += 1
        if self._asked == 2:
            self._ticket.release()
        return anext(self._requests)


def _overloaded(full: Overloaded) -> ResourceExhaustedError:
    return ResourceExhaustedError(
        "the controller is admitting other registrations and stream opens first; "
        f"retry in {full.retry_after_s:.1f}s",
        reason="OVERLOADED",
        metadata={"retry_after_ms": str(round(full.retry_after_s * 1000))},
    )
