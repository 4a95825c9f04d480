"""Operators' reads get their own queue of incoming calls in grpc core, so that they are not
accepted behind a flood of other calls.

grpc's core queues every incoming call of a method that is not registered with it in one queue
of calls waiting to be accepted, first come first served, and grpc.aio's server accepts them
one at a time, a few turns of the event loop each. A fleet joining at once keeps that queue
hundreds of calls deep however fast the controller parks what it accepts (`api/admission.py`):
measured with the bound alone, an operator's GetNodeStats still waited 0.6-2.7 s, all of it
before grpc handed the call to Python. A method registered with grpc (`add_registered_method_
handlers`) has a queue of its own and one accept always pending for it: its calls are accepted
at once, whatever waits in the shared queue. Each registered method costs every accepted call
~0.5 us (`api/generic_only.py`), so only the reads named in `EXEMPT_METHODS` are registered.

`ExemptQueues` stands for the server where the generated `add_*_to_server` functions (through
`GenericOnly`) add generic handlers: it passes them on, and registers the exempt methods with
the very handler the generic path would serve (asked of the generic handler by method name),
so both paths serve a method alike."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import grpc
from automator67.v1 import deployment_service_pb2, node_service_pb2
from grpc import aio
from grpc_health.v1 import health_pb2

_NODES = node_service_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name
_DEPLOYMENTS = deployment_service_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name
_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

# Reads operators (and probes) make while a fleet joins; they take no admission slot either.
EXEMPT_METHODS = (
    f"/{_NODES}/GetNodeStats",
    f"/{_NODES}/GetNode",
    f"/{_NODES}/ListNodes",
    f"/{_DEPLOYMENTS}/GetDeployment",
    f"/{_DEPLOYMENTS}/ListDeployments",
    f"/{_HEALTH}/Check",
)


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class ExemptQueues:
    """Generic handlers go to `server`; the methods of `exempt` they serve are also registered
    with it (before it starts). Only `add_generic_rpc_handlers` is used by `GenericOnly`."""

    def __init__(self, server: aio.Server, exempt: Collection[str] = EXEMPT_METHODS) -> None:
        self._server: Any = server  # grpc-stubs lack add_registered_method_handlers
        self._waiting = set(exempt)  # not yet found in a generic handler

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)
        for generic in generic_rpc_handlers:
            for method in sorted(self._waiting):
                handler = generic.service(_Details(method))
                if handler is not None:
                    service, _, name = method[1:].rpartition("/")
                    self._server.add_registered_method_handlers(service, {name: handler})
                    self._waiting.discard(method)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        self._server.add_registered_method_handlers(service_name, method_handlers)
