"""The plaintext health port (`A67_HEALTH_PORT`, off by default): a second gRPC server that
serves `grpc.health.v1.Health` (Check, Watch, List) and nothing else.

It exists for the kubelet's native `grpc` probe, which speaks plaintext only: with
`A67_TLS_CERT_FILE`/`A67_TLS_KEY_FILE` the main port accepts TLS alone, so probes pointed at it
fail. As with NATS' monitoring port or etcd's `--listen-metrics-urls`, health gets its own port
without TLS. It answers from the main server's health servicer, so both ports report the same
status at every moment (NOT_SERVING from the first step of the shutdown). Nothing else is
registered on it: no reflection, no interceptors, no token (health is open on the main port too),
so any other method is UNIMPLEMENTED. It binds the main server's host."""

from __future__ import annotations

from grpc import aio
from grpc_health.v1 import health_pb2_grpc

from controller.config import ConfigError

# Health answers are a few bytes; a probe's request is too. Anything bigger is not a probe.
MAX_MESSAGE_BYTES = 4096


class HealthPort:
    """`start()` binds and serves; `stop()` closes the port (cancelling open Watch streams)."""

    def __init__(self, host: str, port: int, servicer: health_pb2_grpc.HealthServicer) -> None:
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._setting = f"A67_HEALTH_PORT {port} on {host}"
        self._servicer = servicer
        self._server: aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        """Raises ConfigError when the port cannot be bound."""
        server = aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        try:
            self.port = server.add_insecure_port(self._address)
        except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
            raise ConfigError(f"{self._setting} cannot be used: {exc}") from None
        await server.start()
        self._server = server

    async def stop(self, grace_s: float = 0.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace_s)
