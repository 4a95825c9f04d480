"""Builds and runs the controller: store -> registries -> servicers -> one grpc.aio server with
health, reflection and the request interceptor (and, with A67_HEALTH_PORT, a plaintext server of
the same health servicer alone: controller/health_port.py).

Shutdown order (SIGTERM/SIGINT): health turns NOT_SERVING so balancers stop routing here; the
server (and the HTTP gateway, when on) refuses new RPCs and gives in-flight ones
`shutdown_grace_s`; the health port (NOT_SERVING all through the grace) closes; the metrics
endpoint (on
while the grace runs, so the shutdown itself is visible) stops; then the store closes, after
the last RPC that could write to it and the last write whose caller left."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import TYPE_CHECKING, cast
from urllib.parse import urlparse

from automator67.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    deployment_service_pb2,
    deployment_service_pb2_grpc,
    node_service_pb2,
    node_service_pb2_grpc,
)
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controller import gc_policy, metrics, tracing
from controller.admission import Gate
from controller.api import reflection
from controller.api.admission import JOIN_METHODS, AdmissionInterceptor
from controller.api.agent_servicer import AgentServicer
from controller.api.deployment_servicer import DeploymentServicer
from controller.api.exempt import ExemptQueues
from controller.api.generic_only import GenericOnly
from controller.api.heartbeat_stream import HeartbeatStream, StreamSettings
from controller.api.interceptors import RequestInterceptor
from controller.api.node_servicer import NodeServicer
from controller.api.watch import Watch
from controller.api.watch_events import DeploymentEvents, NodeEvents
from controller.auth.principals import node_of_caller
from controller.clock import Clock, SystemClock
from controller.config import Config, ConfigError
from controller.gc_policy import Churn, GcPolicy, GcSettings
from controller.health_port import HealthPort
from controller.models import PlacementStrategy
from controller.registry.changes import ChangeLog
from controller.registry.deployments import DeploymentRegistry
from controller.registry.feed import ChangeFeed
from controller.registry.leadership import Leadership, LeadershipSettings
from controller.registry.liveness import LivenessSettings
from controller.registry.monitor import HealthMonitor
from controller.registry.nodes import NodeRegistry
from controller.registry.sessions import Sessions
from controller.scheduler.loop import Scheduler, SchedulerSettings
from controller.security import Security
from controller.store import is_embedded, open_store

if TYPE_CHECKING:
    from controller.gateway.server import HttpGateway
    from controller.prometheus import Exporter
    from controller.tracing.otel import Tracing

log = logging.getLogger("controller.server")

SERVICES = (
    node_service_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name,
    deployment_service_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name,
    agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
)


class Controller:
    """One running controller. `start()` returns once it serves; `stop()` shuts it down in order."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.tracing = start_tracing(config)  # first: a bad OTEL_* setting stops before keys
        self.security = Security.load(config)  # keys: loaded, or generated on first start
        self.store = open_store(config.store_url, self.security.sealer, serving=True)
        # What the registries use: the store, whose transactions are spans when tracing.
        store = self._store = self.store
        if self.tracing is not None:
            store = self._store = self.tracing.traced_store(
                store, urlparse(config.store_url).scheme
            )
        # One feed of the store's change log for every view of this process (registry/feed.py).
        self.feed = ChangeFeed(store)
        self.leadership = Leadership(store, leadership_settings(config), self.clock)
        self.nodes = NodeRegistry(
            store, self.clock, liveness_settings(config), self.feed, self.leadership
        )
        self.leadership.on_refresh.append(self.nodes.reconsider)
        self.deployments = DeploymentRegistry(store, self.clock, self.feed)
        self.sessions = Sessions()
        self.deployments.on_assignments_changed.append(self.sessions.assignments_changed)
        self.nodes.on_released.append(
            lambda node_id, holder: self.sessions.end(
                node_id, f"replaced by a heartbeat stream on replica {holder}"
            )
        )
        self.monitor = HealthMonitor(
            self.nodes,
            self.clock,
            tick_s=min(0.25, config.suspect_after_s / 10),
            heartbeat_persist_interval_s=config.heartbeat_persist_interval_s,
        )
        self.leadership.on_change.append(metrics.leadership_changed)
        self.scheduler = Scheduler(
            self.deployments,
            self.nodes,
            self.sessions,
            self.clock,
            scheduler_settings(config),
            leadership=self.leadership,
            trace=self.tracing.span if self.tracing is not None else tracing.no_span,
        )
        self.leadership.on_change.append(lambda leading, epoch: self.deployments.changed.set())
        self.nodes.on_transition.append(lambda old, new: self.deployments.changed.set())
        # Metrics hang off the domain's events: the registry and the scheduler know no metrics.
        self.nodes.on_transition.append(metrics.node_transition)
        self.scheduler.on_pass.append(metrics.scheduler_pass)
        # Registrations and stream opens handled at once, the rest parked (controller/admission.py).
        self.admission = Gate(
            config.admission_max_inflight, config.admission_max_queued, self.clock
        )
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.port = 0
        self.metrics: Exporter | None = None
        if config.metrics_port:  # else nothing is counted, nor Prometheus imported
            metrics.enable()
            from controller.prometheus import Exporter, StateSource

            source = StateSource(self.nodes.stats, self.deployments.stats, self.admission.state)
            self.metrics = Exporter(config.host, config.metrics_port, source)
        self._server: aio.Server | None = None
        # Plaintext, health only, from the same servicer (controller/health_port.py).
        self.health_port: HealthPort | None = None
        if config.health_port:
            self.health_port = HealthPort(config.host, config.health_port, self.health)
        self.gateway: HttpGateway | None = None
        self._gateway_dir = ""  # private folder of the gateway's Unix socket to the server

    async def start(self) -> None:
        await self.store.open()
        await self.nodes.load()
        await self.deployments.load()
        if self.metrics is not None:
            self.metrics.start()  # first: a taken port stops the start before gRPC serves
        # The span of a call sits inside the request interceptor, which names its request id.
        spans = [self.tracing.server_interceptor()] if self.tracing is not None else []
        server = aio.server(
            interceptors=[
                RequestInterceptor(),
                *spans,
                self.security.interceptor(),
                # Inside auth: only an authenticated call takes a slot (api/admission.py).
                AdmissionInterceptor(self.admission, JOIN_METHODS),
            ],
            options=server_options(self.config),
        )
        heartbeats = HeartbeatStream(
            self.nodes,
            self.deployments,
            self.sessions,
            stream_settings(self.config),
            self.clock,
            node_of_caller,
        )
        changes = ChangeLog(self._store)
        node_watch = Watch("node", self.nodes, NodeEvents(), changes)
        node_servicer = NodeServicer(
            self.nodes, node_watch, self.security.node_token, self.leadership
        )
        # Typed as the server: the generated add_* functions use only these two methods.
        # generic_only.py: a cost per call; exempt.py: operators' reads accepted apart.
        services = cast(aio.Server, GenericOnly(cast(aio.Server, ExemptQueues(server))))
        node_service_pb2_grpc.add_NodeServiceServicer_to_server(node_servicer, services)
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentServicer(heartbeats), services
        )
        deployment_service_pb2_grpc.add_DeploymentServiceServicer_to_server(
            DeploymentServicer(
                self.deployments,
                Watch("deployment", self.deployments, DeploymentEvents(), changes),
            ),
            services,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, services)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable(server, (*SERVICES, health_name))
        self.port = self.security.add_port(server)  # TLS when configured
        if self.config.http_port:
            await self._start_gateway(server)  # a taken port stops the start before gRPC serves
        if self.health_port is not None:
            await self.health_port.start()  # likewise
        await server.start()
        self._server = server
        self.feed.start()  # other replicas' writes
        self.monitor.start()
        self.leadership.start()
        self.scheduler.start()
        for name in ("", *SERVICES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        server, self._server = self._server, None
        await self.health.enter_graceful_shutdown()
        # Agents are told to reconnect (elsewhere, or here after the restart) before the server
        # stops; their streams then end cleanly instead of being cut at the end of the grace.
        self.sessions.reconnect_all("controller shutting down")
        # Liveness and scheduling stop before the grace: a node whose stream ends now was sent
        # away by us, so nothing may judge it (the next start gives it the failover grace).
        await self.scheduler.stop()
        await self.leadership.stop()  # the lease runs out; another replica takes over
        await self.monitor.stop()
        await self.feed.stop()
        # Watchers are told to resume elsewhere (UNAVAILABLE) instead of holding the grace.
        self.nodes.events.close()
        self.deployments.events.close()
        # HTTP requests in flight finish within the same grace as RPCs (they are RPCs).
        stopping = [self.gateway.stop()] if self.gateway is not None else []
        if server is not None:
            stopping.append(server.stop(self.config.shutdown_grace_s))
        await asyncio.gather(*stopping)
        # Probes on the health port saw NOT_SERVING all through the grace; now it closes.
        if self.health_port is not None:
            await self.health_port.stop()
        if self._gateway_dir:
            shutil.rmtree(self._gateway_dir, ignore_errors=True)
        if self.metrics is not None:
            await self.metrics.stop()
        # Writes whose callers left (a deadline, a cancelled RPC) finish before the store closes.
        await self.nodes.settle()
        await self.deployments.settle()
        await self.store.close()
        if self.tracing is not None:
            await self.tracing.shutdown()  # exports the spans still queued

    async def _start_gateway(self, server: aio.Server) -> None:
        """The HTTP/JSON gateway (controller/gateway/) calls this server through a Unix socket in
        a folder only this user may enter (mkdtemp makes it 0700), plaintext whatever the TCP
        port's TLS: tokens are still checked on it. aiohttp is imported only here."""
        from controller.gateway.server import HttpGateway
        from controller.gateway.services import controller_routes
        from controller.tls import http_ssl_context

        self._gateway_dir = tempfile.mkdtemp(prefix="a67-gw-")
        target = f"unix:{os.path.join(self._gateway_dir, 'grpc.sock')}"
        server.add_insecure_port(target)
        self.gateway = HttpGateway(
            controller_routes(),
            self.config.host,
            self.config.http_port,
            target,
            max_body_bytes=self.config.max_message_bytes,
            shutdown_grace_s=self.config.shutdown_grace_s,
            ssl_context=http_ssl_context(self.config),
        )
        try:
            await self.gateway.start()
        except OSError as exc:
            self.gateway = None
            shutil.rmtree(self._gateway_dir, ignore_errors=True)
            raise ConfigError(
                f"A67_HTTP_PORT {self.config.http_port} on {self.config.host} cannot be used: {exc}"
            ) from None


def start_tracing(config: Config) -> Tracing | None:
    """Traces exported over OTLP if the OpenTelemetry environment asks for them (see
    `controller/tracing/__init__.py`); None otherwise, without importing OpenTelemetry."""
    if not tracing.enabled(os.environ):
        return None
    from controller.tracing.otel import Tracing

    try:
        return Tracing.from_environment(leadership_settings(config).replica_id)
    except ValueError as exc:  # an OTEL_* setting the controller cannot honour
        raise ConfigError(str(exc)) from None


def leadership_settings(config: Config) -> LeadershipSettings:
    # Stable across restarts when the port is (a restarted replica keeps the nodes it held).
    host = socket.gethostname()
    default = f"{host}:{config.port}" if config.port else f"{host}-{os.getpid()}"
    return LeadershipSettings(
        config.replica_id or default,
        config.leader_lease_s,
        config.leader_lease_s / 3,
        exclusive=is_embedded(config.store_url),
    )


def liveness_settings(config: Config) -> LivenessSettings:
    return LivenessSettings(
        interval_s=config.heartbeat_interval_s,
        suspect_after_s=config.suspect_after_s,
        offline_after_s=config.offline_after_s,
        failover_grace_s=config.failover_grace_s,
        self_suspicion_fraction=config.self_suspicion_fraction,
        self_suspicion_max_s=config.self_suspicion_max_s,
    )


def scheduler_settings(config: Config) -> SchedulerSettings:
    return SchedulerSettings(
        default_strategy=PlacementStrategy(config.default_strategy.upper()),
        eviction_rate_per_s=config.eviction_rate_per_s,
        stop_timeout_s=config.stop_timeout_s,
    )


def stream_settings(config: Config) -> StreamSettings:
    return StreamSettings(interval_s=config.heartbeat_interval_s, max_age_s=config.stream_max_age_s)


def server_options(config: Config) -> list[tuple[str, int]]:
    """gRPC core settings. Keepalive: the server pings every `keepalive_time_s` and drops a
    connection whose ping goes unanswered for `keepalive_timeout_s` (a frozen or partitioned
    agent). Clients may ping at most every 5 s (more is a strike; two strikes close the
    connection). Connections are never aged out by gRPC itself: heartbeat streams end on their
    own jittered timer, with a Reconnect message, so that no stream is cut mid-beat."""
    limit = config.max_message_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_ping_strikes", 2),
        # A connection must finish its handshake (TLS, then the client's HTTP/2 preface and
        # SETTINGS) in time, or it is closed: sockets that never speak would otherwise each
        # hold a file descriptor for grpc's default of 120 s.
        ("grpc.server_handshake_timeout_ms", int(config.handshake_timeout_s * 1000)),
        # Thousands of agents reconnect at once after a restart; the default queue (1000)
        # would refuse them with a misleading INTERNAL error.
        ("grpc.server.max_pending_requests", 20000),
        ("grpc.server.max_pending_requests_hard_limit", 30000),
    ]


# Each agent holds one connection, hence one file descriptor, for as long as it runs; the store,
# the metrics endpoint, logs and grpc itself need some more.
FD_MARGIN = 256
LOW_FD_LIMIT = 4096


def raise_fd_limit() -> int:
    """Raises the soft limit on open files to the hard one (as Go programs do at start) and
    returns the limit in force: the number of agents it allows is that less FD_MARGIN."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # the kernel's ceiling (fs.nr_open) is lower: keep the soft limit
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def warn_if_few_fds(limit: int) -> None:
    if limit < LOW_FD_LIMIT:
        fields = {"limit": limit, "agents_at_most": max(0, limit - FD_MARGIN), "fix": "ulimit -n"}
        log.warning("the open-file limit is low for a fleet", extra={"fields": fields})


async def serve(config: Config) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down in order."""
    started = time.perf_counter()
    warn_if_few_fds(raise_fd_limit())
    controller = Controller(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # Loading the store makes objects that all live on: collecting while they pile up only
    # walks them again and again (a quarter of the time to decode 50,000 nodes). One
    # collection follows.
    gc.disable()
    try:
        await controller.start()
    finally:
        gc.enable()
    # What the start made lives as long as the process, and so does what each stream holds: both
    # are frozen out of the collector's reach (gc_policy.py).
    gc_policy.after_start()
    sessions = controller.sessions
    gc_task = asyncio.create_task(
        GcPolicy(GcSettings(), controller.clock).run(
            lambda: Churn(sessions.opened, sessions.closed, len(sessions))
        ),
        name="gc-policy",
    )
    # The store's threads and grpc's poller hand results to the event loop through the GIL,
    # which a busy loop (watchers streaming a fleet) holds up to the switch interval (5 ms by
    # default) at each hand-off: 1 ms cut RegisterNode's p99 under 100 replaying watchers ~2x.
    sys.setswitchinterval(0.001)
    controller.security.log_summary()
    log.info(
        "serving",
        extra={
            "fields": {
                "address": config.host,
                "port": controller.port,
                "metrics_port": controller.metrics.port if controller.metrics else 0,
                "http_port": controller.gateway.port if controller.gateway else 0,
                "health_port": controller.health_port.port if controller.health_port else 0,
                "store": controller.store.__class__.__name__,
                "replica": controller.leadership.replica_id,
                "nodes": controller.nodes.stats().total,
                "startup_ms": round((time.perf_counter() - started) * 1000, 1),
                "event_loop": type(loop).__module__.split(".")[0],  # uvloop or asyncio
            }
        },
    )
    await stopping.wait()
    gc_task.cancel()
    log.info("shutting down", extra={"fields": {"grace_s": config.shutdown_grace_s}})
    await controller.stop()
    log.info("stopped")
