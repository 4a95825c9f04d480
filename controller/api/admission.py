"""The admission interceptor: registrations and heartbeat stream opens pass a `Gate`
(`controller/admission.py`); every other call passes untouched.

It runs inside the request interceptor (so a refusal gets its request id, log line and metrics
there, through the one error table) and outside the auth interceptor: a parked call waits
before its token is checked and its request read, so a flood costs little until it is served.
A call parks in its own task, awaiting a future, off the event loop's ready queue.

The slot is held while the call is handled: a unary call's until its behavior ends; a request
stream's until its first message has been handled (the behavior asks for the second: for a
heartbeat stream, the hello is answered and the stream is open) or the behavior ends. The
call's task releases it too when it ends, whatever happened between (a call cancelled before
its behavior ran).

A call refused when the queue is full gets RESOURCE_EXHAUSTED, reason `OVERLOADED`, with
`retry_after_ms` in its ErrorInfo metadata; agents retry it with their backoff. A refused
request stream is answered once its first message or half-close arrived, or after a grace, as
the auth interceptor does (a client writing as the refusal lands would see INTERNAL instead:
grpc/grpc#36066)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc
from automator67.v1 import agent_service_pb2, node_service_pb2
from grpc import aio

from controller.admission import Gate, Overloaded, Ticket
from controller.api.handlers import Behavior, Handler, ServerInterceptor, refusing, rewrap, run
from controller.errors import ResourceExhaustedError

log = logging.getLogger("controller.admission")
REFUSAL_GRACE_S = 5.0  # as the auth interceptor's
_NODES = node_service_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name
_AGENTS = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
# What a fleet joining at once floods the controller with.
JOIN_METHODS = (f"/{_NODES}/RegisterNode", f"/{_AGENTS}/Heartbeat")


class AdmissionInterceptor(ServerInterceptor):
    def __init__(self, gate: Gate, methods: Collection[str]) -> None:
        self.gate = gate
        self._methods = frozenset(methods)
        # Per method: the inner handler last wrapped and its wrap (the inner handler is the same
        # object on every call, so this is a lookup after the first).
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        if method not in self._methods:
            return await continuation(handler_call_details)
        gate = self.gate
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "admission",
                extra={
                    "fields": {
                        "method": method,
                        "inflight": gate.inflight,
                        "queued": gate.queued,
                        "parked": gate.must_wait(),
                    }
                },
            )
        try:
            ticket = await gate.enter()
        except Overloaded as full:
            handler = await continuation(handler_call_details)
            return None if handler is None else _refused(handler, full)
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(lambda _: ticket.release())
        try:
            handler = await continuation(handler_call_details)
        except BaseException:
            ticket.release()
            raise
        if handler is None:
            ticket.release()
            return handler
        _current_ticket.set(ticket)
        return self._wrap(method, handler)

    def _wrap(self, method: str, handler: Handler) -> Handler:
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        streaming = handler.request_streaming, handler.response_streaming
        wrapped = rewrap(handler, lambda behavior: _holding(behavior, *streaming))
        self._wrapped[method] = (handler, wrapped)
        return wrapped


# The admitted call's ticket, set in the call's own task, in which its behavior runs too.
_current_ticket: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar(
    "admission_ticket", default=None
)


def _holding(behavior: Behavior, request_streaming: bool, response_streaming: bool) -> Behavior:
    async def wrapped(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        ticket = _current_ticket.get()
        if request_streaming and ticket is not None:
            request = _ReleasingRequests(request, ticket)
        try:
            return await run(behavior, request, context, response_streaming)
        finally:
            if ticket is not None:
                ticket.release()

    return wrapped


class _ReleasingRequests:
    """A request stream that releases the call's slot when its second message is asked for."""

    def __init__(self, requests: AsyncIterator[Any], ticket: Ticket) -> None:
        self._requests = requests
        self._ticket = ticket
        self._asked = 0

    def __aiter__(self) -> _ReleasingRequests:
        return self

    async def __anext__(self) -> Any:
        self._asked += 1
        if self._asked == 2:
            self._ticket.release()
        return await anext(self._requests)


def _refused(handler: Handler, full: Overloaded) -> Handler:
    error = ResourceExhaustedError(
        "the controller is admitting other registrations and stream opens first; "
        f"retry in {full.retry_after_s:.1f}s",
        reason="OVERLOADED",
        metadata={"retry_after_ms": str(round(full.retry_after_s * 1000))},
    )
    streaming = handler.request_streaming

    async def refuse(requests: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        if streaming:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REFUSAL_GRACE_S):
                    await anext(requests)
        raise error

    return refusing(handler, refuse)
