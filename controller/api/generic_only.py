"""Services added as generic handlers only, not as grpc's registered methods.

grpc.aio's server (1.85) keeps one pending "request call" future per registered method and, for
every call it accepts, waits on all of them at once (`asyncio.wait(..., FIRST_COMPLETED)`):
each call pays for every registered method, ~0.5 us apiece (17 of them here, ~8 us a call;
measured: -2 to -5 % of a GetNode's server CPU without them). The generated
`add_*Servicer_to_server` functions add every service both ways; through `GenericOnly` they add
the generic handler alone, which grpc resolves by method name on each call (a dict lookup per
service).

A method whose behavior answers its response already serialized (`encoded.answers_encoded`)
gets no response serializer: grpc sends the bytes the behavior returns as they are. The
generated functions add a service's generic handler, then its method handlers (the same
methods, in a dict); the generic handler of a service is held until its method handlers come,
and a generic handler built from them, serializers adjusted, is added in its place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from grpc import aio

from controller.api.encoded import is_encoded
from controller.api.handlers import Handler, behavior_of, rewrap


class GenericOnly:
    """What the generated `add_*_to_server` functions call, for `server`: generic handlers are
    added, registered-method tables dropped (the generic handler serves the same methods)."""

    def __init__(self, server: aio.Server) -> None:
        self._server = server
        self._held: dict[str, grpc.GenericRpcHandler[Any, Any]] = {}  # service -> its handler

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        for handler in generic_rpc_handlers:
            if isinstance(handler, grpc.ServiceRpcHandler):
                self._held[handler.service_name()] = handler  # its method handlers follow
            else:
                self._server.add_generic_rpc_handlers((handler,))

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, Handler]
    ) -> None:
        held = self._held.pop(service_name, None)
        if held is not None and not any(map(_answers_encoded, method_handlers.values())):
            self._server.add_generic_rpc_handlers((held,))
            return
        adjusted = {name: _passing_bytes(h) for name, h in method_handlers.items()}
        generic = grpc.method_handlers_generic_handler(service_name, adjusted)
        self._server.add_generic_rpc_handlers((generic,))


def _answers_encoded(handler: Handler) -> bool:
    return not handler.response_streaming and is_encoded(behavior_of(handler))


def _passing_bytes(handler: Handler) -> Handler:
    """`handler`, without a response serializer if its behavior answers bytes."""
    if not _answers_encoded(handler):
        return handler
    return rewrap(handler, lambda behavior: behavior, response_serializer=None)
