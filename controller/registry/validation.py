"""The rules a node or deployment spec must meet. Every broken rule is reported at once, named by
its path in the API request (`node.capabilities.cpu_cores`), so a client can fix them all.

Every number has a ceiling far above any real machine but far below where sums overflow: a node
of 1.7e308 cores would make every capacity total infinite (and a placement check meaningless)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence, Set

from controller.errors import FieldViolation, InvalidArgumentError
from controller.models import DeploymentSpec, NodeSpec

MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_ENV = 256
MAX_ENV_VALUE = 32_768
MAX_ARGV = 256
MAX_ARG = 4096
MAX_TOKEN = 8192
MAX_REPLICAS = 1000
MAX_CPU_CORES = 100_000.0  # per node or replica
MAX_MEMORY_GB = 1_000_000.0  # 1 PB
MAX_DISK_GB = 100_000_000.0  # 100 PB
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, in Unix milliseconds
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # provider, region: 1-64 characters
_LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")


class _Checker:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, path: str, description: str) -> None:
        self.violations.append(FieldViolation(path, description))

    def text(self, path: str, value: str, *, limit: int, required: bool = False) -> None:
        if required and not value:
            self.fail(path, "is required")
        elif len(value) > limit:
            self.fail(path, f"must be at most {limit} characters (got {len(value)})")
        elif "\x00" in value:
            self.fail(path, "must not contain NUL characters")

    def name(self, path: str, value: str, *, required: bool = False) -> None:
        self.text(path, value, limit=64, required=required)
        if value and len(value) <= 64 and not _NAME.fullmatch(value):
            self.fail(path, "must start with a letter or digit and use only [A-Za-z0-9._-]")

    def number(self, path: str, value: float, *, maximum: float, positive: bool = False) -> None:
        if not math.isfinite(value):
            self.fail(path, "must be a finite number")
        elif positive and value <= 0:
            self.fail(path, "must be greater than 0")
        elif value < 0:
            self.fail(path, "must not be negative")
        elif value > maximum:
            self.fail(path, f"must be at most {maximum:g}")

    def labels(self, path: str, labels: Mapping[str, str]) -> None:
        if len(labels) > MAX_LABELS:
            self.fail(path, f"at most {MAX_LABELS} labels (got {len(labels)})")
            return
        for key, value in labels.items():
            if not _LABEL_KEY.fullmatch(key):
                self.fail(f"{path}[{key[:64]!r}]", "key must be 1-63 characters of [A-Za-z0-9._/-]")
            elif len(value) > MAX_LABEL_VALUE:
                self.fail(f"{path}[{key!r}]", f"value must be at most {MAX_LABEL_VALUE} characters")
            elif "\x00" in value:
                self.fail(f"{path}[{key!r}]", "value must not contain NUL characters")

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgumentError(self.violations)


def validate_mask(paths: Sequence[str], updatable: Set[str]) -> None:
    """An update mask names at least one field, and only fields in `updatable`."""
    if not paths:
        raise InvalidArgumentError.single("update_mask", "name at least one field to change")
    unknown = [p for p in paths if p not in updatable]
    if unknown:
        allowed = ", ".join(sorted(updatable))
        raise InvalidArgumentError.single(
            "update_mask", f"cannot update {unknown[0]!r}; updatable: {allowed}"
        )


def validate_node(spec: NodeSpec, root: str = "node") -> None:
    c = _Checker()
    c.name(f"{root}.provider", spec.provider, required=True)
    c.text(f"{root}.endpoint", spec.endpoint, limit=2048, required=True)
    c.name(f"{root}.region", spec.region)
    caps = spec.capabilities
    if caps is None:
        c.fail(f"{root}.capabilities", "is required")
    else:
        path = f"{root}.capabilities"
        c.number(f"{path}.cpu_cores", caps.cpu_cores, maximum=MAX_CPU_CORES, positive=True)
        c.number(f"{path}.memory_gb", caps.memory_gb, maximum=MAX_MEMORY_GB, positive=True)
        c.number(f"{path}.disk_gb", caps.disk_gb, maximum=MAX_DISK_GB)
        c.text(f"{root}.capabilities.network_bandwidth", caps.network_bandwidth, limit=64)
    creds = spec.credentials
    if creds is not None:
        token = creds.oauth_token.reveal()
        c.text(f"{root}.credentials.oauth_token_encrypted", token, limit=MAX_TOKEN, required=True)
        c.name(f"{root}.credentials.oauth_provider", creds.oauth_provider)
        if creds.oauth_expires_at_ms < 0:
            c.fail(f"{root}.credentials.oauth_expires_at", "must not be negative")
        elif creds.oauth_expires_at_ms > MAX_TIME_MS:
            c.fail(f"{root}.credentials.oauth_expires_at", "must be before the year 10000")
    c.labels(f"{root}.labels", spec.labels)
    c.raise_if_any()


def validate_deployment(spec: DeploymentSpec, root: str = "deployment") -> None:
    c = _Checker()
    c.text(f"{root}.name", spec.name, limit=63, required=True)
    if spec.name and len(spec.name) <= 63 and not _DNS_LABEL.fullmatch(spec.name):
        c.fail(f"{root}.name", "must be a DNS label: [a-z0-9-], starting and ending alphanumeric")
    c.text(f"{root}.image", spec.image, limit=1024)
    if not spec.image and not spec.command:
        c.fail(f"{root}.image", "image or command is required")
    for field, argv in (("command", spec.command), ("args", spec.args)):
        if len(argv) > MAX_ARGV:
            c.fail(f"{root}.{field}", f"at most {MAX_ARGV} items (got {len(argv)})")
        for i, arg in enumerate(argv[:MAX_ARGV]):
            c.text(f"{root}.{field}[{i}]", arg, limit=MAX_ARG)
    if len(spec.env) > MAX_ENV:
        c.fail(f"{root}.env", f"at most {MAX_ENV} variables (got {len(spec.env)})")
    else:
        for key, value in spec.env.items():
            if not _ENV_KEY.fullmatch(key):
                c.fail(f"{root}.env[{key[:64]!r}]", "name must match [A-Za-z_][A-Za-z0-9_]*")
            c.text(f"{root}.env[{key[:64]!r}]", value, limit=MAX_ENV_VALUE)
    res = spec.resources
    c.number(f"{root}.resources.cpu_cores", res.cpu_cores, maximum=MAX_CPU_CORES)
    c.number(f"{root}.resources.memory_gb", res.memory_gb, maximum=MAX_MEMORY_GB)
    c.number(f"{root}.resources.disk_gb", res.disk_gb, maximum=MAX_DISK_GB)
    if not 0 <= spec.replicas <= MAX_REPLICAS:
        c.fail(f"{root}.replicas", f"must be between 0 and {MAX_REPLICAS}")
    c.name(f"{root}.constraints.provider", spec.constraints.provider)
    c.name(f"{root}.constraints.region", spec.constraints.region)
    c.labels(f"{root}.constraints.labels", spec.constraints.labels)
    _rollout_rules(c, spec, root)
    c.raise_if_any()


def _rollout_rules(c: _Checker, spec: DeploymentSpec, root: str) -> None:
    """The update strategy's and the health check's rules (issue 14)."""
    s, path = spec.update_strategy, f"{root}.update_strategy"
    for name, value in (("max_unavailable", s.max_unavailable), ("max_surge", s.max_surge)):
        top = 100 if value.percent else MAX_REPLICAS
        if not 0 <= value.value <= top:
            unit = "%" if value.percent else ""
            c.fail(f"{path}.{name}", f"must be between 0{unit} and {top}{unit}")
    if s.max_unavailable.value == 0 and s.max_surge.value == 0:
        c.fail(f"{path}.max_unavailable", "must not be 0 when max_surge is 0 (nothing could move)")
    if not 0 <= s.min_ready_s <= 3600:
        c.fail(f"{path}.min_ready_seconds", "must be between 0 and 3600")
    if not 1 <= s.progress_deadline_s <= 86_400:
        c.fail(f"{path}.progress_deadline_seconds", "must be between 1 and 86400")
    elif s.progress_deadline_s <= s.min_ready_s:
        c.fail(f"{path}.progress_deadline_seconds", "must be greater than min_ready_seconds")
    if not 1 <= s.revision_history_limit <= 100:
        c.fail(f"{path}.revision_history_limit", "must be between 1 and 100")
    check, path = spec.health_check, f"{root}.health_check"
    if check is None:
        return
    if bool(check.command) == bool(check.tcp_port):
        c.fail(path, "set exactly one of command and tcp_port")
    if check.tcp_port and not 1 <= check.tcp_port <= 65535:
        c.fail(f"{path}.tcp_port", "must be between 1 and 65535")
    if len(check.command) > MAX_ARGV:
        c.fail(f"{path}.command", f"at most {MAX_ARGV} items (got {len(check.command)})")
    for i, arg in enumerate(check.command[:MAX_ARGV]):
        c.text(f"{path}.command[{i}]", arg, limit=MAX_ARG)
    for name, seconds in (("interval", check.interval_s), ("timeout", check.timeout_s)):
        if not (math.isfinite(seconds) and 0.1 <= seconds <= 3600):
            c.fail(f"{path}.{name}", "must be between 0.1s and 3600s")
    if not 1 <= check.failure_threshold <= 100:
        c.fail(f"{path}.failure_threshold", "must be between 1 and 100")
