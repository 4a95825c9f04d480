"""Services added as generic handlers only, not as grpc's registered methods.

grpc.aio's server (1.85) keeps one pending "request call" future per registered method and, for
every call it accepts, waits on all of them at once (`asyncio.wait(..., FIRST_COMPLETED)`):
each call pays for every registered method, ~0.5 us apiece (17 of them here, ~8 us a call;
measured: -2 to -5 % of a GetNode's server CPU without them). The generated
`add_*Servicer_to_server` functions add every service both ways; through `GenericOnly` they add
the generic handler alone, which grpc resolves by method name on each call (a dict lookup per
service)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from grpc import aio


class GenericOnly:
    """What the generated `add_*_to_server` functions call, for `server`: generic handlers are
    added, registered-method tables dropped (the generic handler serves the same methods)."""

    def __init__(self, server: aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        pass  # served by the generic handler added with them
