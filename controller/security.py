"""Everything security the server needs, built from `Config` in one place: the token verifier
and issuer, the credential sealer, the auth interceptor and the listening port (TLS or not).

Secure by default: with the embedded store, a missing signing key and credential key file are
generated in the data dir (mode 0600) on first start, and authentication is on."""

from __future__ import annotations

import functools
import logging
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.auth.keys import SigningKeys, signing_keys
from controller.auth.principals import Role
from controller.auth.tokens import TokenIssuer, TokenSettings, TokenVerifier
from controller.config import Config
from controller.store import is_embedded

# What only a serving controller uses (gRPC, TLS, the auth interceptor and through it the API
# layer, the credential sealer) is imported where it is used: `automator67 token create`
# imports this module for `issue_token` alone.
if TYPE_CHECKING:
    import grpc
    from grpc import aio

    from controller.auth.interceptor import AuthInterceptor
    from controller.crypto import AesGcmSealer

log = logging.getLogger("controller.auth")


def token_settings(config: Config) -> TokenSettings:
    return TokenSettings(config.jwt_issuer, config.jwt_audience, config.jwt_leeway_s)


def embedded_store(config: Config) -> bool:
    """Key files are generated only next to an embedded store: replicas sharing a database
    must share keys, which a generated file per replica would break."""
    return is_embedded(config.store_url)


def issue_token(config: Config, role: str, subject: str, ttl_s: float) -> str:
    """A token signed with `config`'s key (which must exist). Raises ConfigError or ValueError."""
    keys = signing_keys(config, generate=False)
    if keys.signing_key is None:
        raise ValueError("a public key verifies tokens but cannot sign them")
    return TokenIssuer(keys, token_settings(config)).issue(Role(role), subject, ttl_s)


def create_token_hint(config: Config) -> str:
    """The command that creates an admin token for this controller."""
    words = ["automator67", "token", "create", "--role", "admin"]
    if not (config.jwt_private_key_file or config.jwt_secret_file):
        words += ["--data-dir", str(config.data_dir)]
    elif config.jwt_private_key_file:
        words += ["--jwt-private-key-file", config.jwt_private_key_file]
    else:
        words += ["--jwt-secret-file", config.jwt_secret_file]
    return shlex.join(words)


@dataclass(frozen=True)
class Security:
    config: Config
    sealer: AesGcmSealer
    keys: SigningKeys | None  # None when authentication is off
    credentials: grpc.ServerCredentials | None  # None: plaintext

    @classmethod
    def load(cls, config: Config) -> Security:
        """Loads (or, first time, generates) the keys. Raises ConfigError."""
        from controller import tls
        from controller.crypto import keys_file, load_sealer

        generate = embedded_store(config)
        credentials = tls.server_credentials(config)
        sealer, sealer_generated = load_sealer(config, generate=generate)
        if sealer_generated:
            fields = {"file": str(keys_file(config)), "key_id": sealer.current_key_id}
            log.info("generated a credential encryption key", extra={"fields": fields})
        keys = None
        if config.auth == "jwt":
            keys = signing_keys(config, generate=generate)
            if keys.generated:
                log.info("generated a token signing key", extra={"fields": {"file": keys.source}})
        return cls(config, sealer, keys, credentials)

    def log_summary(self) -> None:
        """One line on how callers authenticate, with the command that makes an admin token."""
        from controller import tls

        if self.keys is None:
            log.warning(
                "authentication is OFF: anyone who reaches the port controls the fleet",
                extra={"fields": {"auth": "off", "transport": tls.mode(self.config)}},
            )
            return
        fields = {
            "auth": "jwt",
            "algorithm": self.keys.algorithm,
            "key": self.keys.source,
            "transport": tls.mode(self.config),
            "create_admin_token": create_token_hint(self.config),
        }
        log.info("authentication is on", extra={"fields": fields})

    def interceptor(self) -> AuthInterceptor:
        from controller.auth.interceptor import AuthInterceptor

        return AuthInterceptor(self._verifier, self.config.max_streams_per_principal)

    @functools.cached_property
    def _verifier(self) -> TokenVerifier | None:
        """One per controller: it also remembers the node tokens `node_token` issues."""
        return TokenVerifier(self.keys, token_settings(self.config)) if self.keys else None

    def node_token(self, node_id: str) -> str:
        """A token for `node_id`'s agent, or "" when this controller cannot sign (verify-only
        keys, or authentication off)."""
        if self.keys is None or self.keys.signing_key is None:
            return ""
        issuer = TokenIssuer(self.keys, token_settings(self.config), verifier=self._verifier)
        return issuer.issue(Role.NODE, node_id, self.config.node_token_ttl_s)

    def add_port(self, server: aio.Server) -> int:
        address = self.config.listen_address
        if self.credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.credentials)
