"""The controller's one configuration: typed, frozen, validated at start.

Every field is settable by a command-line flag and by an environment variable (the flag wins);
units are in the names. `automator67 serve --help` prints this table."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller import event_loop as loops
from controller import flags


class ConfigError(ValueError):
    """An invalid setting; the message is one line naming the setting and the fix."""


def _setting(default: Any, env: str, help: str, shown: str | None = None) -> Any:
    return flags.setting(default, env, help, shown)


@dataclass(frozen=True)
class Config:
    host: str = _setting("127.0.0.1", "A67_HOST", "address to listen on (0.0.0.0 or :: for all)")
    port: int = _setting(50051, "PORT", "gRPC port; 0 picks a free one (logged at start)")
    log_level: str = _setting("info", "LOG_LEVEL", "debug, info, warning or error")
    event_loop: str = _setting(
        "auto",
        "A67_EVENT_LOOP",
        "asyncio event loop: auto (uvloop when installed), uvloop or asyncio",
    )
    data_dir: Path = _setting(
        Path("data"), "A67_DATA_DIR", "folder for the embedded store and keys"
    )
    store_url: str = _setting(
        "", "A67_STORE_URL", "store URL", shown="sqlite:///DATA_DIR/controller.db"
    )
    shutdown_grace_s: float = _setting(
        10.0, "A67_SHUTDOWN_GRACE_S", "on SIGTERM, how long in-flight RPCs may take to finish"
    )
    max_message_bytes: int = _setting(
        16 * 1024 * 1024, "A67_MAX_MESSAGE_BYTES", "largest request message accepted"
    )
    metrics_port: int = _setting(
        0,
        "A67_METRICS_PORT",
        "port of the Prometheus /metrics endpoint, on the gRPC host; 0: off (9464 is usual)",
    )
    http_port: int = _setting(
        0,
        "A67_HTTP_PORT",
        "port of the HTTP/JSON gateway (the original REST paths, /api/v1/...), on the gRPC host, "
        "with its TLS; 0: off",
    )
    health_port: int = _setting(
        0,
        "A67_HEALTH_PORT",
        "port serving only grpc.health.v1.Health, in plaintext even with TLS (for the "
        "kubelet's grpc probes), on the gRPC host; 0: off",
    )

    heartbeat_interval_s: float = _setting(
        5.0, "A67_HEARTBEAT_INTERVAL_S", "how often agents must send a heartbeat"
    )
    suspect_after_s: float = _setting(
        0.0,
        "A67_SUSPECT_AFTER_S",
        "a node with no beat for this long is SUSPECT; 0: 1.5 x interval",
    )
    offline_after_s: float = _setting(
        0.0, "A67_OFFLINE_AFTER_S", "a node with no beat for this long is OFFLINE; 0: 3 x interval"
    )
    failover_grace_s: float = _setting(
        60.0,
        "A67_FAILOVER_GRACE_S",
        "after a restart, how long alive nodes keep their status to reconnect",
    )
    self_suspicion_fraction: float = _setting(
        0.5,
        "A67_SELF_SUSPICION_FRACTION",
        "when more than this share of live nodes is SUSPECT, "
        "the controller suspects itself and marks none OFFLINE",
    )
    self_suspicion_max_s: float = _setting(
        300.0, "A67_SELF_SUSPICION_MAX_S", "self-suspicion ends after this long at the latest"
    )
    heartbeat_persist_interval_s: float = _setting(
        30.0,
        "A67_HEARTBEAT_PERSIST_INTERVAL_S",
        "last-heartbeat times are stored at most this often",
    )
    stream_max_age_s: float = _setting(
        1800.0,
        "A67_STREAM_MAX_AGE_S",
        "heartbeat streams are ended (agents reconnect) after "
        "this long, +-10% jitter, so that agents spread over replicas",
    )
    keepalive_time_s: float = _setting(
        20.0, "A67_KEEPALIVE_TIME_S", "server pings an idle connection after this long"
    )
    keepalive_timeout_s: float = _setting(
        0.0,
        "A67_KEEPALIVE_TIMEOUT_S",
        "a ping unanswered this long closes the connection; 0: min(10, offline-after / 2)",
    )
    handshake_timeout_s: float = _setting(
        5.0,
        "A67_HANDSHAKE_TIMEOUT_S",
        "a connection that has not finished its TLS and HTTP/2 handshake in this long is closed "
        "(idle sockets would otherwise hold file descriptors for 2 minutes)",
    )

    # Replicas: README "Running several replicas"; controller/registry/leadership.py.
    replica_id: str = _setting(
        "",
        "A67_REPLICA_ID",
        "this replica's name in the leader lease, logs and GetNodeStats (default: host-pid)",
        shown="HOSTNAME-PID",
    )
    leader_lease_s: float = _setting(
        10.0,
        "A67_LEADER_LEASE_S",
        "the leader's lease, renewed every third of it: a dead leader is replaced within "
        "lease + lease/3",
    )

    default_strategy: str = _setting(
        "spread",
        "A67_DEFAULT_STRATEGY",
        "placement of deployments that name none: spread or binpack",
    )
    eviction_rate_per_s: float = _setting(
        1.0, "A67_EVICTION_RATE_PER_S", "OFFLINE nodes whose replicas are replaced, per second"
    )
    stop_timeout_s: float = _setting(
        30.0,
        "A67_STOP_TIMEOUT_S",
        "a deleted deployment's replica on an unreachable node counts as stopped after this",
    )

    # Security: README "Security"; controller/auth/, controller/tls.py, controller/crypto.py.
    auth: str = _setting(
        "jwt",
        "A67_AUTH",
        "jwt: every RPC but health checks needs a bearer token; off: none does (refused "
        "beyond loopback unless A67_AUTH_OFF_ALLOW_REMOTE=yes)",
    )
    auth_off_allow_remote: str = _setting(
        "no",
        "A67_AUTH_OFF_ALLOW_REMOTE",
        "yes lets A67_AUTH=off listen on a non-loopback address: whoever reaches the port "
        "controls the fleet",
    )
    jwt_private_key_file: str = _setting(
        "",
        "A67_JWT_PRIVATE_KEY_FILE",
        "PEM Ed25519 or RSA private key that signs and verifies tokens; "
        "default DATA_DIR/jwt-signing-key.pem, generated on first start",
    )
    jwt_public_key_file: str = _setting(
        "", "A67_JWT_PUBLIC_KEY_FILE", "PEM public key: verify tokens only, issue none"
    )
    jwt_secret_file: str = _setting(
        "", "A67_JWT_SECRET_FILE", "file holding an HMAC secret (>= 32 bytes) instead of a key"
    )
    jwt_algorithm: str = _setting(
        "", "A67_JWT_ALGORITHM", "pinned algorithm; default EdDSA, RS256 or HS256 by the key"
    )
    jwt_issuer: str = _setting("automator67", "A67_JWT_ISSUER", "iss of issued/accepted tokens")
    jwt_audience: str = _setting("automator67", "A67_JWT_AUDIENCE", "aud of issued/accepted tokens")
    jwt_leeway_s: float = _setting(
        10.0, "A67_JWT_LEEWAY_S", "clock skew tolerated on token expiry and not-before"
    )
    node_token_ttl_s: float = _setting(
        365 * 86400.0, "A67_NODE_TOKEN_TTL_S", "lifetime of the agent token RegisterNode returns"
    )
    max_streams_per_principal: int = _setting(
        100, "A67_MAX_STREAMS_PER_PRINCIPAL", "open streams one token subject may hold at once"
    )
    admission_max_inflight: int = _setting(
        1000,
        "A67_ADMISSION_MAX_INFLIGHT",
        "registrations and heartbeat stream opens handled at once (others wait); 0: no bound",
    )
    admission_max_queued: int = _setting(
        100000,
        "A67_ADMISSION_MAX_QUEUED",
        "registrations and stream opens waiting for admission; more get RESOURCE_EXHAUSTED",
    )
    tls_cert_file: str = _setting(
        "", "A67_TLS_CERT_FILE", "PEM certificate chain; with A67_TLS_KEY_FILE, serve TLS only"
    )
    tls_key_file: str = _setting("", "A67_TLS_KEY_FILE", "PEM private key of the certificate")
    tls_client_ca_file: str = _setting(
        "",
        "A67_TLS_CLIENT_CA_FILE",
        "PEM CA bundle: every client must present a certificate it signed (mTLS)",
    )
    credential_keys_file: str = _setting(
        "",
        "A67_CREDENTIAL_KEYS_FILE",
        "AES-256-GCM keys that seal node credentials; default DATA_DIR/credential-keys.json, "
        "generated on first start",
    )

    def __post_init__(self) -> None:
        if not self.store_url:
            object.__setattr__(self, "store_url", f"sqlite:///{self.data_dir / 'controller.db'}")
        if not self.suspect_after_s:
            object.__setattr__(self, "suspect_after_s", 1.5 * self.heartbeat_interval_s)
        if not self.offline_after_s:
            object.__setattr__(self, "offline_after_s", 3 * self.heartbeat_interval_s)
        if not self.keepalive_timeout_s:
            object.__setattr__(self, "keepalive_timeout_s", min(10.0, self.offline_after_s / 2))
        self._validate()

    def _validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.metadata['env']} must be a finite number, not {value}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"PORT must be between 0 and 65535, not {self.port}")
        if not 0 <= self.metrics_port <= 65535 or (
            self.metrics_port and self.metrics_port == self.port
        ):
            raise ConfigError(
                f"A67_METRICS_PORT must be between 0 (off) and 65535 and differ from PORT, "
                f"not {self.metrics_port}"
            )
        ports = (self.port, self.metrics_port)
        if not 0 <= self.http_port <= 65535 or (self.http_port and self.http_port in ports):
            raise ConfigError(
                f"A67_HTTP_PORT must be between 0 (off) and 65535 and differ from PORT and "
                f"A67_METRICS_PORT, not {self.http_port}"
            )
        others = (self.port, self.metrics_port, self.http_port)
        if not 0 <= self.health_port <= 65535 or (self.health_port and self.health_port in others):
            raise ConfigError(
                f"A67_HEALTH_PORT must be between 0 (off) and 65535 and differ from PORT, "
                f"A67_METRICS_PORT and A67_HTTP_PORT, not {self.health_port}"
            )
        try:
            loops.resolve(self.event_loop)
        except loops.EventLoopError as exc:
            raise ConfigError(str(exc)) from None
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(
                f"LOG_LEVEL must be debug, info, warning or error, not {self.log_level!r}"
            )
        if self.host != "localhost":
            try:
                ipaddress.ip_address(self.host)
            except ValueError:
                raise ConfigError(
                    f"A67_HOST must be an IP address or localhost, not {self.host!r}"
                ) from None
        if not 0 <= self.shutdown_grace_s <= 3600:
            raise ConfigError(
                f"A67_SHUTDOWN_GRACE_S must be between 0 and 3600, not {self.shutdown_grace_s}"
            )
        if not 64 * 1024 <= self.max_message_bytes <= 256 * 1024 * 1024:
            raise ConfigError("A67_MAX_MESSAGE_BYTES must be between 65536 and 268435456")
        self._validate_liveness()
        if self.default_strategy not in ("spread", "binpack"):
            raise ConfigError(
                f"A67_DEFAULT_STRATEGY must be spread or binpack, not {self.default_strategy!r}"
            )
        if not 0 < self.eviction_rate_per_s <= 1000 or not 0 <= self.stop_timeout_s <= 86400:
            raise ConfigError(
                "A67_EVICTION_RATE_PER_S must be in (0, 1000], A67_STOP_TIMEOUT_S in [0, 86400]"
            )
        if not self.store_url.startswith(("sqlite://", "postgresql://")):
            raise ConfigError(
                f"A67_STORE_URL must start with sqlite:// or postgresql://, not {self.store_url!r}"
            )
        self._validate_security()

    def _validate_liveness(self) -> None:
        if not 0.05 <= self.heartbeat_interval_s <= 3600:
            raise ConfigError("A67_HEARTBEAT_INTERVAL_S must be between 0.05 and 3600")
        if not self.heartbeat_interval_s < self.suspect_after_s < self.offline_after_s:
            raise ConfigError(
                "need A67_HEARTBEAT_INTERVAL_S < A67_SUSPECT_AFTER_S < A67_OFFLINE_AFTER_S, got "
                f"{self.heartbeat_interval_s:g} < {self.suspect_after_s:g}"
                f" < {self.offline_after_s:g}"
            )
        if self.offline_after_s <= self.keepalive_timeout_s:
            raise ConfigError(
                "A67_OFFLINE_AFTER_S must exceed A67_KEEPALIVE_TIMEOUT_S, so that a transport "
                "timeout never outlasts the grace"
            )
        if self.failover_grace_s < self.offline_after_s:
            raise ConfigError("A67_FAILOVER_GRACE_S must be at least A67_OFFLINE_AFTER_S")
        if not 0 < self.self_suspicion_fraction <= 1:
            raise ConfigError("A67_SELF_SUSPICION_FRACTION must be in (0, 1]")
        if self.self_suspicion_max_s < 0 or self.heartbeat_persist_interval_s <= 0:
            raise ConfigError(
                "A67_SELF_SUSPICION_MAX_S and A67_HEARTBEAT_PERSIST_INTERVAL_S must be > 0"
            )
        if self.stream_max_age_s < 10 * self.heartbeat_interval_s:
            raise ConfigError("A67_STREAM_MAX_AGE_S must be at least 10 heartbeat intervals")
        if not 1 <= self.keepalive_time_s <= 7200 or not 0.01 <= self.keepalive_timeout_s <= 600:
            raise ConfigError(
                "A67_KEEPALIVE_TIME_S must be in [1, 7200], A67_KEEPALIVE_TIMEOUT_S in [0.01, 600]"
            )
        if not 0.1 <= self.handshake_timeout_s <= 120:
            raise ConfigError(
                f"A67_HANDSHAKE_TIMEOUT_S must be in [0.1, 120], not {self.handshake_timeout_s:g}"
            )
        if not 0.3 <= self.leader_lease_s <= 300:
            raise ConfigError(
                f"A67_LEADER_LEASE_S must be in [0.3, 300], not {self.leader_lease_s:g}"
            )
        if len(self.replica_id) > 128 or not self.replica_id.isprintable():
            raise ConfigError("A67_REPLICA_ID must be at most 128 printable characters")

    def _validate_security(self) -> None:
        if self.auth not in ("jwt", "off") or self.auth_off_allow_remote not in ("yes", "no"):
            raise ConfigError("A67_AUTH must be jwt or off; A67_AUTH_OFF_ALLOW_REMOTE yes or no")
        loopback = self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback
        if self.auth == "off" and not loopback and self.auth_off_allow_remote != "yes":
            raise ConfigError(
                f"A67_AUTH=off is refused on the non-loopback address {self.host}: anyone who "
                "reaches it would control the fleet (set A67_AUTH_OFF_ALLOW_REMOTE=yes to accept)"
            )
        if self.jwt_secret_file and (self.jwt_private_key_file or self.jwt_public_key_file):
            raise ConfigError("A67_JWT_SECRET_FILE excludes A67_JWT_PRIVATE/PUBLIC_KEY_FILE")
        if not self.jwt_issuer or not self.jwt_audience:
            raise ConfigError("A67_JWT_ISSUER and A67_JWT_AUDIENCE must not be empty")
        if not 0 <= self.jwt_leeway_s <= 300 or not 60 <= self.node_token_ttl_s <= 10 * 365 * 86400:
            raise ConfigError(
                "A67_JWT_LEEWAY_S must be in [0, 300], A67_NODE_TOKEN_TTL_S in [60, 10 years]"
            )
        if not 1 <= self.max_streams_per_principal <= 1_000_000:
            raise ConfigError("A67_MAX_STREAMS_PER_PRINCIPAL must be between 1 and 1000000")
        if not 0 <= self.admission_max_inflight <= 100_000 or not (
            0 <= self.admission_max_queued <= 1_000_000
        ):
            raise ConfigError(
                "A67_ADMISSION_MAX_INFLIGHT must be in [0, 100000], "
                "A67_ADMISSION_MAX_QUEUED in [0, 1000000]"
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("A67_TLS_CERT_FILE and A67_TLS_KEY_FILE go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("A67_TLS_CLIENT_CA_FILE needs A67_TLS_CERT_FILE and A67_TLS_KEY_FILE")

    @property
    def listen_address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def log_level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level.upper()]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds one `--flag` per field, documented with its env var and default."""
        flags.add_arguments(cls, parser)

    @classmethod
    def load(
        cls, args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Flags, then env vars, then defaults. Raises ConfigError with one clear line."""
        return cls(**flags.values(cls, args, environ, _parse))


def _parse(kind: str, raw: str, source: str) -> Any:
    return flags.parse_scalar(kind, raw, source, ConfigError)


def parse_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Parses `serve` arguments alone (for tests)."""
    parser = argparse.ArgumentParser()
    Config.add_arguments(parser)
    return Config.load(parser.parse_args(list(argv)), environ)
