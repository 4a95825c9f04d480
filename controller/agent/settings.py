"""The agent's one configuration: typed, frozen, validated at start.

Every field is settable by a flag of `automator67 agent` and by an `A67_AGENT_*` environment
variable (the flag wins). What the node offers (cores, memory, disk) defaults to this host's
real values, its endpoint to the host name."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import event_loop as loops
from controller import flags
from controller.agent.drivers import DRIVERS

GIB = 1024**3
_LABEL_KEY = re.compile(r"^[A-Za-z0-9._/-]{1,63}$")
Labels = tuple[tuple[str, str], ...]


class SettingsError(ValueError):
    """An invalid setting; the message is one line naming the setting and the fix."""


def _meta(env: str, help: str, shown: str | None = None) -> dict[str, str | None]:
    return {"env": env, "help": help, "shown": shown}


@dataclass(frozen=True)
class AgentSettings:
    controller: str = field(
        default="",
        metadata=_meta(
            "A67_AGENT_CONTROLLER",
            "the controller, HOST:PORT (required); replicas as a comma list "
            "(a:50051,b:50052,c:50053) or one DNS name with several addresses",
        ),
    )
    state_file: Path = field(
        default=Path("agent-state.json"),
        metadata=_meta("A67_AGENT_STATE_FILE", "JSON file that keeps this node's id (mode 0600)"),
    )
    provider: str = field(
        default="bare-metal", metadata=_meta("A67_AGENT_PROVIDER", "the node's provider")
    )
    endpoint: str = field(
        default="",
        metadata=_meta("A67_AGENT_ENDPOINT", "the node's address", "this host's name"),
    )
    region: str = field(default="", metadata=_meta("A67_AGENT_REGION", "the node's region"))
    labels: Labels = field(
        default=(),
        metadata=_meta("A67_AGENT_LABELS", "the node's labels, KEY=VALUE,KEY=VALUE", "none"),
    )
    cpu_cores: float = field(
        default=0.0,
        metadata=_meta("A67_AGENT_CPU_CORES", "CPU cores offered", "this host's logical CPUs"),
    )
    memory_gb: float = field(
        default=0.0,
        metadata=_meta("A67_AGENT_MEMORY_GB", "memory offered, GiB", "this host's memory"),
    )
    disk_gb: float = field(
        default=0.0,
        metadata=_meta("A67_AGENT_DISK_GB", "disk offered, GiB", "the size of this host's /"),
    )
    driver: str = field(
        default="simulated",
        metadata=_meta(
            "A67_AGENT_DRIVER",
            "how assigned replicas run: simulated (pretend) or exec (the deployment's command "
            "as a local process)",
        ),
    )
    backoff_base_s: float = field(
        default=0.5,
        metadata=_meta(
            "A67_AGENT_BACKOFF_BASE_S",
            "first reconnect delay bound; also bounds the jitter of a reconnect the controller "
            "asks for",
        ),
    )
    backoff_max_s: float = field(
        default=15.0,
        metadata=_meta("A67_AGENT_BACKOFF_MAX_S", "largest reconnect delay bound"),
    )
    rpc_timeout_s: float = field(
        default=10.0,
        metadata=_meta(
            "A67_AGENT_RPC_TIMEOUT_S", "deadline of each call, and of opening a heartbeat stream"
        ),
    )
    log_level: str = field(
        default="info", metadata=_meta("A67_AGENT_LOG_LEVEL", "debug, info, warning or error")
    )
    # Not uvloop by default: its child processes run Python's at-fork hooks, in which gRPC's
    # crash (the exec driver's commands died of SIGSEGV); the standard loop forks without them.
    event_loop: str = field(
        default="asyncio",
        metadata=_meta(
            "A67_AGENT_EVENT_LOOP",
            "asyncio event loop: asyncio, uvloop (not with the exec driver) or auto (uvloop when "
            "installed)",
        ),
    )
    # Security (README "Security"): the bearer token, and TLS to the controller.
    token: str = field(
        default="",
        repr=False,
        metadata=_meta(
            "A67_AGENT_TOKEN",
            "bearer token: agent-bootstrap (or admin) registers the node (then the node token "
            "it gets, kept in the state file, is used); node streams for its own node. Prefer "
            "the env var: flags show in ps",
            "none",
        ),
    )
    tls_ca_file: str = field(
        default="",
        metadata=_meta(
            "A67_AGENT_TLS_CA_FILE",
            "PEM CA that signed the controller's certificate; set: connect with TLS",
            "none: plaintext",
        ),
    )
    tls_cert_file: str = field(
        default="",
        metadata=_meta("A67_AGENT_TLS_CERT_FILE", "PEM client certificate, for mTLS", "none"),
    )
    tls_key_file: str = field(
        default="", metadata=_meta("A67_AGENT_TLS_KEY_FILE", "PEM key of the client certificate")
    )

    def __post_init__(self) -> None:
        if not self.endpoint:
            object.__setattr__(self, "endpoint", socket.gethostname())
        if not (self.cpu_cores and self.memory_gb and self.disk_gb):
            import psutil  # here, not at the top: every command's parser imports this module

            if not self.cpu_cores:
                object.__setattr__(self, "cpu_cores", float(psutil.cpu_count() or 1))
            if not self.memory_gb:
                total = psutil.virtual_memory().total
                object.__setattr__(self, "memory_gb", round(total / GIB, 2))
            if not self.disk_gb:
                object.__setattr__(self, "disk_gb", round(psutil.disk_usage("/").total / GIB, 2))
        self._validate()

    def _validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingsError(f"{f.metadata['env']} must be a finite number")
        if not self.controller.strip():
            raise SettingsError("--controller (A67_AGENT_CONTROLLER) is required, e.g. host:50051")
        if any(not target.strip() for target in self.controller.split(",")) and not (
            self.controller.startswith(("ipv4:", "ipv6:"))
        ):
            raise SettingsError(
                "A67_AGENT_CONTROLLER: an empty address in the list, e.g. a:50051,b:50052"
            )
        if not 1 <= len(self.provider) <= 64:
            raise SettingsError("A67_AGENT_PROVIDER must be 1-64 characters")
        if not 1 <= len(self.endpoint) <= 2048:
            raise SettingsError("A67_AGENT_ENDPOINT must be 1-2048 characters")
        if len(self.region) > 64:
            raise SettingsError("A67_AGENT_REGION must be at most 64 characters")
        if len(self.labels) > 64:
            raise SettingsError("A67_AGENT_LABELS: at most 64 labels")
        for key, value in self.labels:
            if not _LABEL_KEY.match(key) or len(value) > 256:
                raise SettingsError(
                    f"A67_AGENT_LABELS: bad label {key!r}: keys are 1-63 characters of "
                    "[A-Za-z0-9._/-], values at most 256 characters"
                )
        if self.driver not in DRIVERS:
            raise SettingsError(f"A67_AGENT_DRIVER must be one of {', '.join(DRIVERS)}")
        if self.cpu_cores <= 0 or self.memory_gb <= 0 or self.disk_gb < 0:
            raise SettingsError("need A67_AGENT_CPU_CORES > 0, _MEMORY_GB > 0, _DISK_GB >= 0")
        if not 0 < self.backoff_base_s <= self.backoff_max_s <= 3600:
            raise SettingsError(
                "need 0 < A67_AGENT_BACKOFF_BASE_S <= A67_AGENT_BACKOFF_MAX_S <= 3600"
            )
        if not 0 < self.rpc_timeout_s <= 600:
            raise SettingsError("A67_AGENT_RPC_TIMEOUT_S must be in (0, 600]")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError("A67_AGENT_LOG_LEVEL must be debug, info, warning or error")
        try:
            loop = loops.resolve(self.event_loop, "A67_AGENT_EVENT_LOOP")
        except loops.EventLoopError as exc:
            raise SettingsError(str(exc)) from None
        if loop == "uvloop" and self.driver == "exec":
            raise SettingsError(
                "A67_AGENT_EVENT_LOOP: the exec driver needs the asyncio loop (under uvloop the "
                "commands it starts can crash as they fork)"
            )
        if len(self.token) > 8192 or any(c.isspace() for c in self.token):
            raise SettingsError("A67_AGENT_TOKEN must be one JWT, without spaces")
        if bool(self.tls_cert_file) != bool(self.tls_key_file) or (
            self.tls_cert_file and not self.tls_ca_file
        ):
            raise SettingsError(
                "A67_AGENT_TLS_CERT_FILE and _KEY_FILE go together, and need A67_AGENT_TLS_CA_FILE"
            )

    @property
    def labels_map(self) -> dict[str, str]:
        return dict(self.labels)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds one `--flag` per field, documented with its env var and default."""
        flags.add_arguments(cls, parser)

    @classmethod
    def load(
        cls, args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
    ) -> AgentSettings:
        """Flags, then env vars, then defaults. Raises SettingsError with one clear line."""
        return cls(**flags.values(cls, args, environ, _parse))


def parse_labels(raw: str, source: str = "labels") -> Labels:
    """`"tier=gpu,zone=a"` -> `(("tier", "gpu"), ("zone", "a"))`."""
    labels: list[tuple[str, str]] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise SettingsError(f"{source}: {item!r} is not KEY=VALUE")
        labels.append((key.strip(), value.strip()))
    return tuple(labels)


def _parse(kind: str, raw: str, source: str) -> Any:
    if kind == "Labels":
        return parse_labels(raw, source)
    return flags.parse_scalar(kind, raw, source, SettingsError)


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> AgentSettings:
    """Parses `agent` arguments alone (for tests)."""
    parser = argparse.ArgumentParser()
    AgentSettings.add_arguments(parser)
    return AgentSettings.load(parser.parse_args(list(argv)), environ)
