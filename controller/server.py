"""Builds and runs the controller: store -> registries -> servicers -> one grpc.aio server with
health, reflection and the request interceptor.

Shutdown order (SIGTERM/SIGINT): health turns NOT_SERVING so balancers stop routing here; the
server refuses new RPCs and gives in-flight ones `shutdown_grace_s`; then the store closes, after
the last RPC that could write to it."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from automator67.v1 import (
    deployment_service_pb2,
    deployment_service_pb2_grpc,
    node_service_pb2,
    node_service_pb2_grpc,
)
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controller.api.deployment_servicer import DeploymentServicer
from controller.api.interceptors import RequestInterceptor
from controller.api.node_servicer import NodeServicer
from controller.clock import Clock, SystemClock
from controller.config import Config
from controller.registry.deployments import DeploymentRegistry
from controller.registry.nodes import NodeRegistry
from controller.store import open_store

log = logging.getLogger("controller.server")

SERVICES = (
    node_service_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name,
    deployment_service_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name,
)


class Controller:
    """One running controller. `start()` returns once it serves; `stop()` shuts it down in order."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.store = open_store(config.store_url)
        self.nodes = NodeRegistry(self.store, self.clock)
        self.deployments = DeploymentRegistry(self.store, self.clock)
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]  # grpcio-health-checking sets it at import
        self.port = 0
        self._server: aio.Server | None = None

    async def start(self) -> None:
        await self.store.open()
        await self.nodes.load()
        await self.deployments.load()
        limit = self.config.max_message_bytes
        server = aio.server(
            interceptors=[RequestInterceptor()],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        node_service_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(self.nodes), server)
        deployment_service_pb2_grpc.add_DeploymentServiceServicer_to_server(
            DeploymentServicer(self.deployments), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection(
            (*SERVICES, health_name, reflection.SERVICE_NAME), server
        )
        self.port = server.add_insecure_port(self.config.listen_address)
        await server.start()
        self._server = server
        for name in ("", *SERVICES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        server, self._server = self._server, None
        await self.health.enter_graceful_shutdown()
        if server is not None:
            await server.stop(self.config.shutdown_grace_s)
        await self.store.close()


async def serve(config: Config) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down in order."""
    started = time.perf_counter()
    controller = Controller(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await controller.start()
    log.info(
        "serving",
        extra={
            "fields": {
                "address": config.host,
                "port": controller.port,
                "store": controller.store.__class__.__name__,
                "nodes": controller.nodes.stats().total,
                "startup_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        },
    )
    await stopping.wait()
    log.info("shutting down", extra={"fields": {"grace_s": config.shutdown_grace_s}})
    await controller.stop()
    log.info("stopped")
