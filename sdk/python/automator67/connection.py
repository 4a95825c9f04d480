"""How a client reaches the controller: its address, bearer token, TLS and channel options.

Shared by the sync client, the asyncio client and the agent helper; builds no channel itself."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

# Matched to the controller: it refuses client pings more often than every 5 s (two strikes
# close the connection), so 30 s stays well clear of that and still finds a dead connection
# within 40 s. gRPC's own reconnect backoff is 0.5 s to 15 s.
CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.initial_reconnect_backoff_ms": 500,
    "grpc.min_reconnect_backoff_ms": 500,
    "grpc.max_reconnect_backoff_ms": 15_000,
    # A DNS name with several addresses: each new channel starts at a random one (gRFC A62),
    # so a fleet of clients spreads over the replicas behind one name.
    "grpc.service_config": json.dumps(
        {"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": True}}]}
    ),
}

Token = str | Callable[[], str]
Metadata = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class TLS:
    """TLS to the controller. `ca` is the PEM of the CA that signed its certificate (None: the
    system's roots); `cert` and `key` (PEM, together) make it mutual TLS. Build it from files
    with `TLS.from_files`."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: cert and key go together")

    @classmethod
    def from_files(
        cls,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
    ) -> TLS:
        def read(path: str | Path | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return cls(read(ca_file), read(cert_file), read(key_file))

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def channel_credentials(
    tls: TLS | bool | None, credentials: grpc.ChannelCredentials | None
) -> grpc.ChannelCredentials | None:
    """The credentials of a channel: given ones, else from `tls` (True: the system's roots),
    else None (plaintext)."""
    if credentials is not None:
        return credentials
    if tls is True:
        return TLS().credentials()
    if isinstance(tls, TLS):
        return tls.credentials()
    return None


def channel_options(options: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """`CHANNEL_OPTIONS` with `options` added or overriding."""
    return list({**CHANNEL_OPTIONS, **dict(options)}.items())


def call_metadata(token: Token | None, metadata: Metadata = ()) -> tuple[tuple[str, str], ...]:
    """`metadata` plus `authorization: Bearer TOKEN` (a callable token is asked each call, so
    it may refresh itself) plus the current trace context (`trace_context`)."""
    value = token() if callable(token) else token
    auth = (("authorization", f"Bearer {value}"),) if value else ()
    return (*metadata, *auth, *trace_context())


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def trace_context() -> tuple[tuple[str, str], ...]:
    """The caller's trace context as metadata, so that the controller's span of the call joins
    the caller's trace: the current OpenTelemetry span's (W3C `traceparent`, `tracestate`,
    `baggage`: whatever propagators the application configured) or, with no span current, the
    `TRACEPARENT` and `TRACESTATE` environment variables (OpenTelemetry's carrier for processes,
    which a shell script sets for the commands it runs, as otel-cli does). The SDK never
    imports OpenTelemetry itself: a span can be current only if the application imported it,
    so an application without it pays one dictionary lookup per call."""
    if "opentelemetry.trace" in sys.modules:
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if carrier:
            return tuple(carrier.items())
    parent = os.environ.get("TRACEPARENT", "").strip().lower()
    if not _TRACEPARENT.fullmatch(parent):
        return ()
    state = os.environ.get("TRACESTATE", "").strip()
    return (("traceparent", parent), *((("tracestate", state),) if state else ()))


def split_targets(targets: str) -> list[str]:
    """`"a:50051, b:50052"` -> `["a:50051", "b:50052"]`; a single target (a DNS name, a gRPC
    target such as `dns:///controllers:50051` or `ipv4:10.0.0.1:1,10.0.0.2:1`) stays whole."""
    if ":///" in targets or targets.startswith(("ipv4:", "ipv6:", "unix:", "unix-abstract:")):
        return [targets.strip()]
    return [t.strip() for t in targets.split(",") if t.strip()]
