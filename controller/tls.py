"""Transport security: the server's TLS credentials from config, with optional mTLS.

With A67_TLS_CERT_FILE and A67_TLS_KEY_FILE the controller serves TLS only (no plaintext port).
With A67_TLS_CLIENT_CA_FILE as well, every client must present a certificate signed by that CA,
or the handshake fails before any RPC: grpcio's server cannot ask for a certificate without
requiring it, so mTLS is all or nothing per port. Bearer tokens are still checked on top: the
certificate proves the machine, the token says what it may do."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from controller.config import Config, ConfigError


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """The credentials `config` names, or None for plaintext. Raises ConfigError."""
    if not config.tls_cert_file:
        return None
    chain = _read(config.tls_cert_file, "A67_TLS_CERT_FILE")
    key = _read(config.tls_key_file, "A67_TLS_KEY_FILE")
    if b"-----BEGIN CERTIFICATE" not in chain or b"PRIVATE KEY-----" not in key:
        raise ConfigError("A67_TLS_CERT_FILE / A67_TLS_KEY_FILE must be PEM files")
    client_ca = None
    if config.tls_client_ca_file:
        client_ca = _read(config.tls_client_ca_file, "A67_TLS_CLIENT_CA_FILE")
        if b"-----BEGIN CERTIFICATE" not in client_ca:
            raise ConfigError("A67_TLS_CLIENT_CA_FILE must be a PEM certificate bundle")
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def mode(config: Config) -> str:
    """For the `serving` log line: plaintext, tls or mtls."""
    if not config.tls_cert_file:
        return "plaintext"
    return "mtls" if config.tls_client_ca_file else "tls"


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{setting}: cannot read {path}: {error.strerror}") from None


def http_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The HTTP gateway's TLS, from the same files as the gRPC port's: TLS when it has TLS, and
    a client certificate signed by A67_TLS_CLIENT_CA_FILE required when it requires one."""
    if not config.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
        if config.tls_client_ca_file:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=config.tls_client_ca_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"A67_HTTP_PORT: cannot use the TLS files: {error}") from None
    return context
