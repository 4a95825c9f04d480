"""Rewrapping gRPC method handlers, for server interceptors: the one place that knows the four
kinds of RPC (unary or streaming, each way) and how grpc builds a handler for each."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

if TYPE_CHECKING:
    ServerInterceptor = aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:  # not generic at run time
    ServerInterceptor = aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler

Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Any]

# Which handler attribute and constructor serve each (request_streaming, response_streaming).
_KINDS: dict[tuple[bool, bool], tuple[str, Any]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def rewrap(handler: Handler, wrap: Callable[[Behavior], Behavior]) -> Handler:
    """The same handler with its behavior replaced by `wrap(behavior)`."""
    attribute, make = _KINDS[(handler.request_streaming, handler.response_streaming)]
    wrapped: Handler = make(
        wrap(getattr(handler, attribute)),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return wrapped
