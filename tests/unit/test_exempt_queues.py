"""Operators' reads are registered with grpc (a queue of their own in its core), with the very
handler the generic path serves (controller/api/exempt.py)."""

from __future__ import annotations

from typing import Any

import grpc

from controller.api.exempt import EXEMPT_METHODS, ExemptQueues


class RecordingServer:
    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for name, handler in handlers.items():
            assert f"/{service}/{name}" not in self.registered
            self.registered[f"/{service}/{name}"] = handler


async def behavior(request: Any, context: Any) -> None:
    return None


def test_exempt_methods_are_registered_with_the_generic_handler_s_own_handlers() -> None:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(behavior)
        for name in ("GetNodeStats", "GetNode", "ListNodes", "RegisterNode", "DeleteNode")
    }
    generic = grpc.method_handlers_generic_handler("automator67.v1.NodeService", handlers)
    server = RecordingServer()
    queues = ExemptQueues(server)  # type: ignore[arg-type]  # a fake of aio.Server's two methods

    queues.add_generic_rpc_handlers((generic,))
    queues.add_generic_rpc_handlers((generic,))  # a method is registered once

    assert server.generic == [generic, generic]
    prefix = "/automator67.v1.NodeService/"
    assert server.registered == {
        prefix + name: handlers[name] for name in ("GetNodeStats", "GetNode", "ListNodes")
    }
    assert all(method in EXEMPT_METHODS for method in server.registered)
