"""Where the operator commands connect, and as whom: every setting is a flag of each command and
an `A67_*` environment variable (the flag wins), as for `serve` and `agent`.

TLS is on once a CA or a client certificate is given (mutual TLS with both); otherwise the
channel is plaintext, as for a controller on 127.0.0.1."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller import flags
from controller.ctl.failures import CommandError, ExitCode, usage

if TYPE_CHECKING:
    from automator67.client import Client

DEFAULT_ADDR = "127.0.0.1:50051"


@dataclass(frozen=True)
class ConnectionSettings:
    addr: str = flags.setting(
        DEFAULT_ADDR,
        "A67_ADDR",
        "the controller, HOST:PORT (or a gRPC target such as dns:///controllers:50051)",
    )
    token: str = flags.setting(
        "", "A67_TOKEN", "bearer token (`automator67 token create --role viewer|operator|admin`)"
    )
    cacert: str = flags.setting("", "A67_CACERT", "PEM file of the CA that signed the controller")
    client_cert: str = flags.setting(
        "", "A67_CLIENT_CERT", "PEM client certificate, for mutual TLS (with --client-key)"
    )
    client_key: str = flags.setting("", "A67_CLIENT_KEY", "PEM key of --client-cert")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("connection")
        flags.add_arguments(cls, group)  # type: ignore[arg-type]  # a group adds arguments too

    @classmethod
    def load(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> ConnectionSettings:
        return cls(**flags.values(cls, args, environ, _parse))

    @property
    def uses_tls(self) -> bool:
        return bool(self.cacert or self.client_cert or self.client_key)

    def client(self) -> Client:
        """A client of the SDK with these settings (grpc is imported here, not before)."""
        from automator67.client import Client
        from automator67.connection import TLS

        tls: TLS | None = None
        if self.uses_tls:
            if bool(self.client_cert) != bool(self.client_key):
                raise usage("--client-cert and --client-key go together")
            try:
                tls = TLS.from_files(
                    self.cacert or None, self.client_cert or None, self.client_key or None
                )
            except OSError as error:
                raise usage(f"cannot read {error.filename}: {error.strerror}") from None
        return Client(self.addr, token=self.token or None, tls=tls)


class _BadSetting(CommandError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.USAGE)


def _parse(kind: str, raw: str, source: str) -> Any:
    return flags.parse_scalar(kind, raw, source, _BadSetting)
