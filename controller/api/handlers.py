"""What the server interceptors (`api/interceptors.py`, `auth/interceptor.py`,
`api/admission.py`) and `api/generic_only.py` share, all of it edge code: rewrapping gRPC method
handlers (the one place that knows the four kinds of RPC and how grpc builds a handler for
each), each method's wrap made once, running a behavior whatever its kind, naming how a
call ended, and parsing requests so that bytes which are not the message become
INVALID_ARGUMENT instead of an exception that grpc would answer UNKNOWN with."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from controller import metrics
from controller.api import status
from controller.errors import ControllerError, FieldViolation, InvalidArgumentError

if TYPE_CHECKING:
    ServerInterceptor = aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:  # not generic at run time
    ServerInterceptor = aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler

Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Any]
Deserializer = Callable[[bytes], Any]
Serializer = Callable[[Any], bytes]

# Which handler attribute and constructor serve each (request_streaming, response_streaming).
_KINDS: dict[tuple[bool, bool], tuple[str, Any]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def behavior_of(handler: Handler) -> Behavior:
    """The servicer's behavior that `handler` runs, whatever the method's kind."""
    behavior: Behavior = getattr(
        handler, _KINDS[(handler.request_streaming, handler.response_streaming)][0]
    )
    return behavior


def rewrap(
    handler: Handler,
    wrap: Callable[[Behavior], Behavior],
    *,
    request_deserializer: Deserializer | EllipsisType | None = ...,
    response_serializer: Serializer | EllipsisType | None = ...,
) -> Handler:
    """The same handler with its behavior replaced by `wrap(behavior)` and, when given, its
    request deserializer replaced (None: the behavior gets the request's raw bytes) or its
    response serializer (None: the behavior's answers are sent as the bytes they are)."""
    attribute, make = _KINDS[(handler.request_streaming, handler.response_streaming)]
    if request_deserializer is ...:
        request_deserializer = handler.request_deserializer
    if response_serializer is ...:
        response_serializer = handler.response_serializer
    wrapped: Handler = make(
        wrap(getattr(handler, attribute)),
        request_deserializer=request_deserializer,
        response_serializer=response_serializer,
    )
    return wrapped


class Wraps:
    """An interceptor's wrap of each method's handler, made once per method: the inner handler
    is the same object on every call (the registered one, or an inner interceptor's wrap of
    it), so a call costs a lookup; a new inner handler (a refused call's) is wrapped anew."""

    __slots__ = ("_by_method",)

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[Handler, Handler]] = {}  # the handler last wrapped

    def get(self, method: str, handler: Handler, wrap: Callable[[Handler], Handler]) -> Handler:
        """`wrap(handler)`, made only if `handler` is not the one last wrapped for `method`."""
        cached = self._by_method.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = wrap(handler)
        self._by_method[method] = (handler, wrapped)
        return wrapped


def refusing(handler: Handler, behavior: Behavior) -> Handler:
    """A handler for a call that `behavior` refuses without parsing its request. It is made
    request-streaming whatever the method's kind, so that grpc reads no message the behavior
    does not ask for (and parses none: the behavior gets raw bytes); HTTP/2 flow control then
    stops the sender of a unary call after a window's worth of a large body instead of the
    whole of it."""
    _, make = _KINDS[(True, handler.response_streaming)]
    refused: Handler = make(
        behavior, request_deserializer=None, response_serializer=handler.response_serializer
    )
    return refused


def run(
    behavior: Behavior, request: Any, context: aio.ServicerContext[Any, Any], streaming: bool
) -> Awaitable[Any]:
    """What to await to run `behavior` to its end: its own coroutine, or for a behavior that is
    an async generator of responses, a coroutine writing them through the context. Not a
    coroutine itself: each layer that runs a behavior would otherwise add a frame that every
    open stream holds for its life (~250 bytes each)."""
    result = behavior(request, context)
    if streaming and inspect.isasyncgen(result):
        return _write_all(result, context)
    awaitable: Awaitable[Any] = result
    return awaitable


async def _write_all(responses: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]) -> None:
    async for message in responses:
        await context.write(message)


def outcome_of(error: BaseException, context: aio.ServicerContext[Any, Any]) -> str:
    """The status code name (for metrics, logs and the audit) of a call that raised `error`."""
    if isinstance(error, ControllerError):
        return status.code_of(error).name
    if isinstance(error, aio.AbortError):  # the behavior aborted: the context has the code
        return metrics.code_name(context.code())
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "INTERNAL"


class Malformed:
    """A request whose bytes are not a valid `message_name`."""

    __slots__ = ("message_name",)

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name

    def error(self) -> InvalidArgumentError:
        description = f"is not a valid {self.message_name}"
        return InvalidArgumentError(
            [FieldViolation("request", description)],
            message=f"the request {description}",
            reason="MALFORMED_REQUEST",
        )


def tolerant(deserializer: Deserializer | None, *, streaming: bool) -> Deserializer | None:
    """`deserializer`, made to answer bytes it cannot parse with INVALID_ARGUMENT instead of
    raising what the runtime raises (grpc would answer UNKNOWN with the exception's class).
    None stays None: raw bytes.

    A unary request is parsed by grpc before the behavior runs, so its parser returns a
    `Malformed` that the wrapped behavior raises (`checked`). The messages of a request stream
    are parsed in the reader's own task, as it awaits the next one, so their parser raises the
    InvalidArgumentError itself, there: the stream needs no wrapper (one more frame held by
    every open stream, and one more coroutine per message)."""
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)  # generated code passes Message.FromString
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = str(getattr(descriptor, "name", "")) or "request message"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError):  # ValueError: UnicodeDecodeError of some runtimes
            if streaming:
                raise Malformed(name).error() from None
            return Malformed(name)

    return deserialize


def checked(request: Any) -> Any:
    """`request`, unless it is `Malformed`: then raises its InvalidArgumentError."""
    if isinstance(request, Malformed):
        raise request.error()
    return request
